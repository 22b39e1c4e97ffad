"""Silently wrong pixels (issue 18): 16-bit PNGs and float TIFFs were clipped to 0..255 (all white
or all black: identical images, AUC 0.0, exit 0); LAB TIFFs passed validation and crashed while
scoring; EXIF orientation was applied to RGB JPEGs converted to greyscale but not to greyscale
JPEGs (nor to RGB JPEGs for an RGB target)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from audit_core.data import check_file, open_image, to_tensor
from audit_core.base.records import ImageRecord


def scores(run_dir):
    return [(r["image_id"], r["score"]) for r in csv.DictReader((run_dir / "scores.csv").open())]


def rewrite(folder, save):
    """Re-save every 8-bit PNG of ``folder`` with ``save(array, stem)`` (and remove the PNG)."""
    for p in sorted(folder.glob("*.png")):
        arr = np.asarray(Image.open(p))
        p.unlink()
        save(arr, folder / p.stem)


@pytest.mark.parametrize(
    "kind",
    ["png16", "tiff16", "tiff-float"],
)
def test_deep_images_score_like_their_8bit_originals(kind, toy, audit_cli, tmp_path):
    suffix = ".png" if kind == "png16" else ".tif"
    original = {p: np.asarray(Image.open(p)) for p in sorted([*toy.members.glob("*.png"), *toy.nonmembers.glob("*.png")])}
    for p, arr in original.items():  # the 8-bit reference, under the same file names (ids seed the noise)
        p.unlink()
        Image.fromarray(arr).save(p.with_suffix(suffix))
    cfg = toy()
    assert audit_cli("run", cfg, "--output", tmp_path / "eight")[0] == 0
    for p, arr in original.items():
        if kind == "tiff-float":
            Image.fromarray((arr / 255).astype(np.float32)).save(p.with_suffix(suffix))
        else:
            Image.fromarray(arr.astype(np.uint16) * 257).save(p.with_suffix(suffix))
    code, output = audit_cli("run", cfg, "--output", tmp_path / "deep")
    assert code == 0, output
    # before: every pixel clipped (white or black), every score equal and the AUC meaningless
    assert scores(tmp_path / "deep") == scores(tmp_path / "eight")


def test_16bit_png_keeps_its_range(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.array([[0, 32896, 65535, 257]], dtype=np.uint16)).save(p)
    assert Image.open(p).mode == "I;16"
    x, changed = to_tensor(open_image(ImageRecord(id="g", path=str(p))), 1, 4, center_crop=False)
    assert changed
    arr = np.asarray(Image.fromarray(np.array([[0, 128, 255, 1]], dtype=np.uint8)).resize((4, 4), Image.Resampling.BICUBIC))
    np.testing.assert_allclose(x[0].numpy(), arr / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_random_16bit_values_are_rounded_not_truncated(tmp_path, suffix):
    """Issue 35: the 16-bit tests above use 8-bit values x 257, where truncating and rounding
    agree, so a truncating conversion (``astype(np.uint8)`` without ``np.round``) passed the
    core's tests. Random 16-bit values tell them apart (about half round up)."""
    from audit_core.data import to_8bit

    rng = np.random.default_rng(35)
    arr = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    p = tmp_path / f"g{suffix}"
    Image.fromarray(arr).save(p)
    img = Image.open(p)
    img.load()
    out, changed = to_8bit(img, img.format)
    expected = np.round(arr.astype(np.float64) * (255 / 65535)).astype(np.uint8)
    assert changed and out.mode == "L"
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert (np.floor(arr.astype(np.float64) * (255 / 65535)).astype(np.uint8) != expected).mean() > 0.3
    # and through the loader, as a run reads it
    x, _ = to_tensor(open_image(ImageRecord(id="g", path=str(p))), 1, 16, center_crop=False)
    np.testing.assert_allclose(x[0].numpy(), expected / 127.5 - 1.0, atol=1e-6)


def test_lab_tiffs_are_converted_not_crashed(toy, audit_cli, tmp_path):
    def save(arr, stem):
        Image.fromarray(np.stack([arr] * 3, axis=-1)).convert("LAB").save(stem.with_suffix(".tif"))

    rewrite(toy.members, save)
    assert check_file(str(next(toy.members.glob("*.tif"))), 10**6) is None
    code, output = audit_cli("run", toy(), "--output", tmp_path / "lab")
    assert code == 0, output  # before: exit 1, "conversion from LAB to RGB not supported", after scoring began


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((8, 8), 3.5, np.float32), "mode F) with values in [3.5, 3.5]"),
        (np.full((8, 8), np.nan, np.float32), "mode F) with NaN"),
        (np.full((8, 8), 70000, np.int32), "32-bit integer image (mode I)"),
    ],
)
def test_ambiguous_modes_are_refused_up_front_naming_file_and_mode(array, expected, toy, refuse):
    bad = toy.members / "odd.tif"
    Image.fromarray(array).save(bad)
    msg = refuse(toy())
    assert str(bad) in msg and expected in msg


def exif_jpeg(path, mode):
    """A 16x8 two-tone JPEG whose EXIF says "rotate 90 degrees clockwise to display" (6)."""
    arr = np.zeros((8, 16), np.uint8)
    arr[:, :8] = 230
    img = Image.fromarray(arr).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)
    with Image.open(path) as im:
        upright = im.transpose(Image.Transpose.ROTATE_270)  # what the EXIF tag asks for
    return Image.fromarray(np.asarray(upright))  # pixels only, no EXIF


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("channels", [1, 3])
def test_exif_orientation_in_every_mode(mode, channels, tmp_path):
    p = tmp_path / f"photo-{mode}.jpg"
    upright = exif_jpeg(p, mode)
    img = open_image(ImageRecord(id="p", path=str(p)))
    assert img.size == (8, 16)
    got, changed = to_tensor(img, channels, 8, center_crop=False)
    want, _ = to_tensor(upright, channels, 8, center_crop=False)
    assert changed
    assert np.array_equal(got.numpy(), want.numpy())  # before: greyscale (and RGB->RGB) were not turned
