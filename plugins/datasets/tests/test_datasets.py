"""Tiny synthetic files in each supported format, loaded through the plugin with a split file."""

import pickle

import numpy as np
import pytest
from PIL import Image

from audit_core.plugin import manager as plugins
from audit_core.base.config import DataCfg
from audit_core.data import load_records
from audit_core.base.errors import DataError


def _rows(n, seed):
    """n images as CIFAR rows (3072 = R plane, G plane, B plane) and as HWC arrays."""
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return hwc.transpose(0, 3, 1, 2).reshape(n, -1), hwc


def _write_pickle(path, data):
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"  # data.root (tmp_path / "data") apart from run folders
    folder.mkdir(parents=True)
    images = []
    for b in range(1, 6):
        rows, hwc = _rows(2, b)
        images.append(hwc)
        _write_pickle(folder / f"data_batch_{b}", {b"data": rows, b"labels": [0, 1]})
    return tmp_path / "data", np.concatenate(images)


def split_file(tmp_path, members, nonmembers, name="split.npz"):
    p = tmp_path / name
    np.savez(p, mia_train_idxs=np.array(members), mia_eval_idxs=np.array(nonmembers))
    return p


def load(name, root, split, base):
    cfg = DataCfg(dataset=name, root=str(root), split=str(split))
    return load_records(cfg, base, plugins.registry("datasets"))


def arrays_of(records, label):
    return [r.array for r in records if r.label == label]


def test_cifar10_split_assigns_members_and_nonmembers(cifar10_root, tmp_path):
    root, images = cifar10_root
    split = split_file(tmp_path, [0, 3, 9], [1, 2, 8])
    data = load("cifar10", root, split, tmp_path)
    assert [r.id for r in data.records if r.label == 1] == ["cifar10-000000", "cifar10-000003", "cifar10-000009"]
    for got, want in zip(arrays_of(data.records, 1), images[[0, 3, 9]]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(arrays_of(data.records, 0), images[[1, 2, 8]]):
        np.testing.assert_array_equal(got, want)


def test_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows, hwc = _rows(4, 7)
    _write_pickle(folder / "train", {b"data": rows, b"fine_labels": [0, 1, 2, 3]})
    data = load("cifar100", tmp_path, split_file(tmp_path, [3], [0, 1]), tmp_path)
    np.testing.assert_array_equal(arrays_of(data.records, 1)[0], hwc[3])
    assert len(arrays_of(data.records, 0)) == 2


def test_stl10_binary_is_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, size=(3, 96, 96, 3), dtype=np.uint8)
    # STL10 stores each channel column-major: (N, C, W, H) in C order
    hwc.transpose(0, 3, 2, 1).tofile(folder / "unlabeled_X.bin")
    data = load("stl10", tmp_path, split_file(tmp_path, [2], [0]), tmp_path)
    np.testing.assert_array_equal(arrays_of(data.records, 1)[0], hwc[2])
    np.testing.assert_array_equal(arrays_of(data.records, 0)[0], hwc[0])


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def test_tiny_imagenet_imagefolder_order(tmp_path):
    train = tmp_path / "tiny-imagenet-200" / "train"
    # ImageFolder order: classes sorted, files sorted -> n02 a(0) b(1), n01 comes first: n01 x(0)...
    _png(train / "n02" / "images" / "b.JPEG", 3)
    _png(train / "n02" / "images" / "a.JPEG", 2)
    _png(train / "n01" / "images" / "x.JPEG", 1)
    (tmp_path / "tiny-imagenet-200" / "val").mkdir()
    data = load("tiny-imagenet", tmp_path, split_file(tmp_path, [0, 2], [1]), tmp_path)
    members = [r.path for r in data.records if r.label == 1]
    assert members[0].endswith("n01/images/x.JPEG") and members[1].endswith("n02/images/b.JPEG")
    assert [r.path for r in data.records if r.label == 0][0].endswith("n02/images/a.JPEG")


def test_plain_image_folder(tmp_path):
    for i in range(4):
        _png(tmp_path / "imgs" / f"{i}.png", i)
    data = load("imagefolder", tmp_path / "imgs", split_file(tmp_path, [1, 2], [0, 3]), tmp_path)
    assert sorted(r.path.rsplit("/", 1)[1] for r in data.records if r.label == 1) == ["1.png", "2.png"]


def test_missing_files_name_what_is_expected(tmp_path):
    split = split_file(tmp_path, [0], [1])
    with pytest.raises(DataError, match="cifar-10-batches-py.*data_batch_1"):
        load("cifar10", tmp_path, split, tmp_path)
    with pytest.raises(DataError, match="stl10_binary"):
        load("stl10", tmp_path, split, tmp_path)
    with pytest.raises(DataError, match="tiny-imagenet-200"):
        load("tiny-imagenet", tmp_path, split, tmp_path)


def test_bad_split_files(cifar10_root, tmp_path):
    root, _ = cifar10_root
    p = tmp_path / "wrong.npz"
    np.savez(p, train=np.array([0]))
    with pytest.raises(DataError, match="mia_train_idxs and mia_eval_idxs"):
        load("cifar10", root, p, tmp_path)
    with pytest.raises(DataError, match="out of range"):
        load("cifar10", root, split_file(tmp_path, [0, 99], [1], "oob.npz"), tmp_path)
    with pytest.raises(DataError, match="both member and non-member"):
        load("cifar10", root, split_file(tmp_path, [0, 1], [1], "dup.npz"), tmp_path)


def test_malicious_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    _write_pickle(folder / "train", {b"data": Evil()})
    with pytest.raises(DataError, match="refusing to load"):
        load("cifar100", tmp_path, split_file(tmp_path, [0], [1]), tmp_path)


def test_audit_run_with_dataset_and_split(cifar10_root, tmp_path, toy_plugin, write_config, audit_cli):
    import csv

    root, _ = cifar10_root
    split = split_file(tmp_path, [0, 1, 2, 3], [4, 5, 6, 7])
    cfg = write_config({
        "target": {"plugin": "toy"},
        "data": {"dataset": "cifar10", "root": str(root), "split": str(split)},
        "attacks": [{"plugin": "variation-similarity", "params": {"t": 100, "k": 50, "n": 1}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, out
    rows = list(csv.DictReader((tmp_path / "run" / "scores.csv").open()))
    assert {r["image_id"] for r in rows if r["label"] == "member"} == {f"cifar10-00000{i}" for i in range(4)}
