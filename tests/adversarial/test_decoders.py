"""Decoders with limits (issue 18): every malformed manifest, data set file or config string is
exit 2 naming the file and line or key, before anything is written; before, these ended in
exit-1 tracebacks (csv.Error, RecursionError, ValueError: embedded null byte, KeyError...)."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest


def manifest(toy, name: str, text: str | bytes):
    """A manifest next to the member images, listing them (``{p}`` = each image's name)."""
    p = toy.members.parent / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def names(toy):
    return [f"members/{p.name}" for p in sorted(toy.members.glob("*.png"))]


def test_csv_with_a_nul_byte(toy, refuse):
    m = manifest(toy, "m.csv", "path,caption\n" + "\n".join(f"{n},x" for n in names(toy)) + "\nmembers/a\x00b.png,x\n")
    msg = refuse(toy(data={"members": str(m)}))
    assert str(m) in msg and "line 8" in msg and "NUL byte" in msg


def test_csv_field_over_the_limit(toy, refuse):
    rows = "\n".join(f"{n},short" for n in names(toy))
    m = manifest(toy, "m.csv", f"path,caption\n{rows}\n{names(toy)[0]},{'c' * 131_073}\n")
    msg = refuse(toy(data={"members": str(m)}))
    assert str(m) in msg and "line 8" in msg and "131072" in msg


def test_csv_with_a_utf8_bom_is_accepted(toy, audit_cli, tmp_path):
    m = manifest(toy, "m.csv", "\ufeffpath,caption\n" + "\n".join(f"{n},a cat" for n in names(toy)) + "\n")
    code, output = audit_cli("run", toy(data={"members": str(m)}), "--output", tmp_path / "run")
    assert code == 0, output  # before: "needs a header with a `path` column"


def test_jsonl_with_a_utf8_bom_is_accepted(toy, audit_cli, tmp_path):
    m = manifest(toy, "m.jsonl", "\ufeff" + "\n".join(f'{{"path": "{n}"}}' for n in names(toy)) + "\n")
    code, output = audit_cli("run", toy(data={"members": str(m)}), "--output", tmp_path / "run")
    assert code == 0, output


def test_deeply_nested_jsonl(toy, refuse):
    deep = '{"path": "members/img0000.png", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    m = manifest(toy, "m.jsonl", f'{{"path": "{names(toy)[1]}"}}\n{deep}\n')
    msg = refuse(toy(data={"members": str(m)}))
    assert str(m) in msg and "line 2" in msg and "nested deeper than 32 levels" in msg


@pytest.mark.parametrize(
    "row, expected",
    [('{"path": {"a": 1}}', "`path` must be text, not dict"), ('{"path": "x.png", "caption": [1]}', "`caption` must be text"),
     ('{"path": ""}', "the `path` is empty"), ('["path"]', "needs an object with a `path`")],
)
def test_jsonl_field_types(row, expected, toy, refuse):
    m = manifest(toy, "m.jsonl", row + "\n")
    msg = refuse(toy(data={"members": str(m)}))
    assert str(m) in msg and "line 1" in msg and expected in msg


def test_manifest_that_is_not_utf8(toy, refuse):
    m = manifest(toy, "m.csv", b"path\n\xff\xfe.png\n")
    msg = refuse(toy(data={"members": str(m)}))
    assert str(m) in msg and "not UTF-8" in msg


# ------------------------------------------------------------------------------ CIFAR batches
def cifar(tmp_path, batch1: bytes):
    """A CIFAR-10 root whose data_batch_1 holds ``batch1`` (2..5 are valid) and a split file."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = np.random.default_rng(0).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    for b in range(2, 6):
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps({b"data": rows, b"labels": [0, 1]}))
    (folder / "data_batch_1").write_bytes(batch1)
    split = tmp_path / "split.npz"
    np.savez(split, mia_train_idxs=np.array([2, 3]), mia_eval_idxs=np.array([4, 5]))
    return tmp_path / "cifar", split, folder / "data_batch_1"


GOOD_ROWS = np.zeros((2, 3072), np.uint8)


@pytest.mark.parametrize(
    "batch, expected",
    [
        (pickle.dumps({b"data": GOOD_ROWS})[:-20], "not a CIFAR python batch"),  # truncated
        (b"\x80\x04\x95garbage", "not a CIFAR python batch"),
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
        (pickle.dumps({b"labels": [0, 1]}), "no `data` entry"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}), "shape [N, 3072]"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float64)}), "float64 array"),
        (pickle.dumps({b"data": [[1, 2, 3]]}), "found a list"),
        (pickle.dumps({b"data": GOOD_ROWS, b"x": io.BytesIO}), "refusing to load"),
    ],
    ids=["truncated", "garbage", "list", "no-data", "row-length", "dtype", "not-an-array", "forbidden-class"],
)
def test_malformed_cifar_batches(batch, expected, toy, refuse, tmp_path):
    root, split, bad = cifar(tmp_path, batch)
    msg = refuse(toy(data={"members": None, "nonmembers": None, "dataset": "cifar10", "root": str(root), "split": str(split)}))
    assert str(bad) in msg and expected in msg


def test_damaged_split_file(toy, refuse, tmp_path):
    root, split, _ = cifar(tmp_path, pickle.dumps({b"data": GOOD_ROWS}))
    data = split.read_bytes()
    split.write_bytes(data[:30] + b"\x00" * 40 + data[70:])  # a damaged zip member header
    with pytest.raises(zipfile.BadZipFile):  # what numpy raises (before: the traceback)
        with np.load(split) as npz:
            npz["mia_train_idxs"]
    msg = refuse(toy(data={"members": None, "nonmembers": None, "dataset": "cifar10", "root": str(root), "split": str(split)}))
    assert "data.split" in msg and str(split) in msg


# ------------------------------------------------------------------------------ NUL in config strings
@pytest.mark.parametrize(
    "section, value, key",
    [("run", {"name": "a\0b"}, "run.name"), ("run", {"output": "out\0dir"}, "run.output"),
     ("cache", {"enabled": True, "dir": "c\0d"}, "cache.dir"), ("data", {"members": "m\0"}, "data.members")],
)
def test_nul_in_config_strings(section, value, key, toy, refuse):
    msg = refuse(toy(**{section: value}))
    assert key in msg and "NUL character" in msg and "line" in msg


def test_nul_from_the_api_set_path():
    from audit_core.base.config import load_config_text
    from audit_core.base.errors import ConfigError

    text = "target: {plugin: toy}\ndata: {members: a, nonmembers: b}\nattacks: [{plugin: x}]\n"
    with pytest.raises(ConfigError, match=r"run.name \(--set run.name=.*contains a NUL character"):
        load_config_text(text, "x.yaml", None, ["run.name=a\0b"])
