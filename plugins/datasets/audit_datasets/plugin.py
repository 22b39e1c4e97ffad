"""Registers the data sets. In audit.yaml::

    data:
      dataset: cifar10                                   # cifar10 | cifar100 | stl10 | tiny-imagenet | imagefolder
      root: /data                                        # where the extracted files are
      split: /data/splits/CIFAR10_train_ratio0.5.npz     # mia_train_idxs = members, mia_eval_idxs = non-members
      limit: 1000

The split indices address the training set in the order torchvision reads it (CIFAR batches 1..5;
STL10 unlabeled_X.bin; Tiny-ImageNet train/ and plain folders in ImageFolder order), which is how
the SecMI, PIA and ReDiffuse code index them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from audit_core import hookimpl, DataError

if TYPE_CHECKING:
    from audit_core import ImageRecord

# the readers (numpy, the config module) are imported when a data set is read, not at start-up
ARRAY_SETS = {
    "cifar10": lambda root: _formats().cifar10(root, train=True),
    "cifar100": lambda root: _formats().cifar100(root, train=True),
    "stl10": lambda root: _formats().stl10(root, "unlabeled"),
}
FILE_SETS = {
    "tiny-imagenet": lambda root: _formats().tiny_imagenet_files(root, "train"),
    "imagefolder": lambda root: _formats().image_folder_files(root),
}


def _formats():
    from . import formats

    return formats


def _path(value: str | None, base_dir: str | None, key: str) -> Path:
    from audit_core import resolve_path

    if not value:
        raise DataError(f"data.{key} is required with data.dataset")
    return resolve_path(value, base_dir)


@lru_cache(maxsize=4)
def _arrays(name: str, root: str):
    return ARRAY_SETS[name](Path(root))


def make_loader(name: str):
    def loader(subset: str, options: dict) -> list[ImageRecord]:
        from audit_core import ImageRecord

        formats = _formats()
        root = _path(options.get("root"), options.get("base_dir"), "root")
        split = _path(options.get("split"), options.get("base_dir"), "split")
        members, nonmembers = formats.load_split(split)
        idx = {"members": members, "nonmembers": nonmembers}.get(subset)
        if idx is None:
            raise DataError(f"dataset {name!r} with a split file serves members and nonmembers, not {subset!r}")
        if name in ARRAY_SETS:
            images = _arrays(name, str(root))
            n = len(images)
        else:
            files = FILE_SETS[name](root)
            n = len(files)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise DataError(f"data.split: index {int(bad[0])} is out of range for {name} with {n} training images in {root}")
        if name in ARRAY_SETS:
            return [ImageRecord(id=f"{name}-{int(i):06d}", array=images[i]) for i in idx]
        return [ImageRecord(id=f"{name}-{int(i):06d}", path=str(files[i])) for i in idx]

    return loader


@hookimpl
def register_datasets(register):
    for name in (*ARRAY_SETS, *FILE_SETS):
        register(name, make_loader(name))
