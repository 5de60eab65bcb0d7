"""Tests for vitviz_core.data / images / boxes; every fixture is written into tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitviz_core import data, images
from vitviz_core.data import (
    Box,
    DataError,
    ImageFolderDataset,
    boxes_to_mask,
    default_dataset,
    find_dataset,
    gallery_dataset,
    imagenet_class_names,
    imagenet_wnids,
    load_image,
    read_ilsvrc_xml,
    read_loc_val_solution,
)
from vitviz_core.images import ImageReadWarning

TENCH, TABBY, TOILET_TISSUE = "n01440764", "n02123045", "n15075141"  # indices 0, 281, 999


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _rgb(color=(200, 30, 40), size=(16, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


def _noise_jpeg(path: Path, size=(96, 96)) -> Path:
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return _save(Image.fromarray(arr), path, quality=95)


# ---------------------------------------------------------------------------- class names


def test_class_names_and_wnids_standard_order():
    wnids, names = imagenet_wnids(), imagenet_class_names()
    assert len(wnids) == len(names) == 1000
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert wnids[0] == TENCH and wnids[281] == TABBY and wnids[999] == TOILET_TISSUE
    assert names[0] == "tench" and names[281] == "tabby" and names[967] == "espresso"
    assert len(set(names)) == 1000  # the two "crane"s and "maillot"s are disambiguated
    assert data.class_name(-1) == "unlabelled"


# ---------------------------------------------------------------------------- load_image


def test_grayscale_and_bilevel_become_rgb(tmp_path):
    gray = load_image(_save(Image.new("L", (10, 8), 77), tmp_path / "g.png"))
    assert gray.mode == "RGB" and gray.size == (10, 8)
    assert np.array(gray)[0, 0].tolist() == [77, 77, 77]
    bilevel = load_image(_save(Image.new("1", (5, 5), 1), tmp_path / "b.png"))
    assert bilevel.mode == "RGB" and np.array(bilevel)[2, 2].tolist() == [255, 255, 255]


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    r, g, b = np.array(load_image(path))[8, 8].tolist()
    assert r > 220 and g < 40 and b < 40  # pure red, not inverted


def test_palette_png_with_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)  # index 0 = green (transparent), 1 = red
    img.putpixel((1, 1), 1)
    path = _save(img, tmp_path / "p.png", transparency=0)
    out = np.array(load_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]  # hidden green must not show
    assert out[1, 1].tolist() == [255, 0, 0]
    gray = np.array(load_image(path, background=(128, 128, 128)))
    assert gray[0, 0].tolist() == [128, 128, 128]


def test_rgba_and_la_alpha_blended(tmp_path):
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (0, 255, 0, 0)  # fully transparent green
    arr[0, 1] = (0, 0, 0, 255)  # opaque black
    arr[1, 0] = (0, 0, 0, 128)  # half-transparent black
    out = np.array(load_image(_save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))).astype(int)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert np.all(np.abs(out[1, 0] - 127) <= 1)
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), "LA")
    out = np.array(load_image(_save(la, tmp_path / "la.png")))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [10, 10, 10]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = np.array(load_image(path))[0, :, 0].tolist()
    assert out == [0, 100, 255, 128]  # clipping would give 255 for every non-zero value


def test_32bit_int_and_float_modes_scaled():
    as_int = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I")
    assert np.array(images.to_rgb(as_int))[0, :, 0].tolist() == [0, 255]
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.array(images.to_rgb(as_float))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(Image.fromarray(arr), tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # width and height swapped
    top, bottom = np.array(out)[2, 10], np.array(out)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # left (red) went to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_raise_and_warn(tmp_path):
    path = _noise_jpeg(tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        load_image(path)
    with pytest.warns(ImageReadWarning, match="cut.jpg"):
        assert load_image(path, on_error="warn") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, on_error="ignore") is None


def test_not_an_image_and_missing_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a jpeg")
    with pytest.raises(DataError, match="notes.jpg"):
        load_image(text)
    with pytest.raises(DataError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
    with pytest.raises(ValueError):
        load_image(text, on_error="skip")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_huge_image_downscaled_with_warning(tmp_path, suffix):
    path = _save(_rgb(size=(200, 100)), tmp_path / f"big{suffix}")  # 20000 px
    with pytest.warns(ImageReadWarning, match=f"big{suffix}"):
        out = load_image(path, max_pixels=5000)
    w, h = out.size
    assert w * h <= 5000 and abs(w / h - 2.0) < 0.05
    assert np.abs(np.array(out)[h // 2, w // 2].astype(int) - (200, 30, 40)).max() < 12


def test_huge_image_module_limit_and_decode_refusal(tmp_path, monkeypatch):
    path = _save(_rgb(size=(100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 2000)
    with pytest.warns(ImageReadWarning):
        assert load_image(path).size == (44, 44)
    with pytest.raises(DataError, match="bomb.png.*too large"):  # 10000 px > 8 * 1000
        load_image(path, max_pixels=1000)


def test_pil_decompression_bomb_limit_does_not_crash(tmp_path, monkeypatch):
    path = _save(_rgb(size=(100, 100)), tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would raise DecompressionBombError
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert load_image(path).size == (100, 100)  # below vitviz's own limit: read as is
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's global restored


# ---------------------------------------------------------------------------- bad files (issue 12)


def _png_bytes(width: int, height: int, row: bytes | None = None) -> bytes:
    """A valid grayscale PNG of ``width x height`` written row by row (streamed zlib), so a
    huge declared size costs no memory here: a decompression-bomb fixture."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj(9)
    line = b"\x00" + (row if row is not None else bytes(width))  # filter byte + pixels
    idat = b"".join(comp.compress(line) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _expect_unreadable(path: Path, reason: str = "") -> None:
    """Every read of ``path`` is a DataError naming it (raise) or a warning + None (warn)."""
    with pytest.raises(DataError, match=f"{path.name}.*{reason}"):
        load_image(path)
    with pytest.warns(ImageReadWarning, match=path.name):
        assert load_image(path, on_error="warn") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, on_error="ignore") is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "progressive"])
def test_truncated_at_every_kind_of_offset_is_a_data_error(tmp_path, fmt):
    arr = np.random.default_rng(1).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    kw = {"format": "JPEG", "quality": 90, "progressive": True} if fmt == "progressive" else {"format": fmt}
    whole = _save(Image.fromarray(arr), tmp_path / "whole.img", **kw).read_bytes()
    # inside the signature, the first marker/chunk header, the tables, the pixel data, the end
    offsets = sorted({1, 3, 7, 12, 20, 33, 60, 150, 400, len(whole) // 2, len(whole) - 30})
    for cut in offsets:
        path = tmp_path / f"cut_{cut}.{'png' if fmt == 'PNG' else 'jpg'}"
        path.write_bytes(whole[:cut])
        _expect_unreadable(path)


def test_directory_symlink_loop_and_dangling_link_with_image_names(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    _expect_unreadable(folder, "directory")
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(tmp_path / "loop.jpg")
    _expect_unreadable(loop, "symbolic link loop")
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    _expect_unreadable(dangling, "no such file")


def _as_unprivileged(fn) -> str:
    """Run ``fn()`` in a forked child that dropped root to ``nobody``; its result or error."""
    import os

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = repr(fn())
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(write_end, out.encode()[:4000])
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as fh:
        return fh.read().decode()


def test_unreadable_file_permissions(tmp_path):
    import os
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="vitviz_perm_"))
    try:
        folder.chmod(0o755)
        path = _save(_rgb(size=(8, 8)), folder / "secret.png")
        path.chmod(0o000)
        if os.geteuid() != 0:
            _expect_unreadable(path, "permission denied")
            return
        if not hasattr(os, "fork"):
            pytest.skip("running as root without os.fork: cannot drop to an unprivileged user")

        def read_both() -> tuple:
            try:
                load_image(path)
                raised = "no error"
            except DataError as exc:
                raised = f"DataError: {exc}"
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                warned = load_image(path, on_error="warn")
            return raised, warned, [str(w.message) for w in rec]

        out = _as_unprivileged(read_both)
        if out.startswith("PermissionError: [Errno 1]"):
            pytest.skip(f"cannot drop to an unprivileged user here ({out})")
        assert "DataError: cannot read image" in out and "secret.png" in out and "permission denied" in out, (
            out
        )
        assert "None" in out and "skipped" in out, out
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    # 12000 x 12000 = 144 Mpixel in a ~150 kB PNG: over the 32 Mpixel budget -> refused
    # without decoding a pixel (the old 400 Mpixel limit decoded it: ~2 GB of RAM)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_bytes(12000, 12000))
    assert bomb.stat().st_size < 1_000_000
    _expect_unreadable(bomb, "decode budget")
    # the budget is configurable: argument and environment variable
    small = _save(Image.fromarray(np.full((60, 50), 7, np.uint8)), tmp_path / "small.png")
    with pytest.raises(DataError, match="small.png.*decode budget of 2000 pixels"):
        load_image(small, max_decode_pixels=2000)
    monkeypatch.setenv("VITVIZ_MAX_DECODE_PIXELS", "2000")
    with pytest.raises(DataError, match="small.png.*decode budget"):
        load_image(small)
    monkeypatch.setenv("VITVIZ_MAX_DECODE_PIXELS", "lots")
    with pytest.raises(ValueError, match="VITVIZ_MAX_DECODE_PIXELS"):
        load_image(small)
    monkeypatch.delenv("VITVIZ_MAX_DECODE_PIXELS")
    assert load_image(small, max_decode_pixels=3000).size == (50, 60)


def test_big_jpeg_over_budget_is_draft_decoded_not_refused(tmp_path):
    path = _noise_jpeg(tmp_path / "wide.jpg", size=(400, 200))  # 80000 px
    with pytest.warns(ImageReadWarning, match="downscaled"):
        out = load_image(path, max_pixels=20000, max_decode_pixels=30000)
    assert out.size[0] * out.size[1] <= 20000 and out.size[0] == 2 * out.size[1]
    png = _save(Image.open(path), tmp_path / "wide.png")
    with pytest.raises(DataError, match="wide.png.*decode budget"):  # PNG cannot be draft-decoded
        load_image(png, max_pixels=20000, max_decode_pixels=30000)


@pytest.mark.slow
def test_peak_memory_of_a_bomb_stays_under_1gb(tmp_path):
    import subprocess
    import sys

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_bytes(30000, 30000))  # 900 Mpixel declared
    # the peak the image read adds above the peak of importing torch & co (~0.6-1.1 GB alone)
    code = (
        "import resource, sys; from vitviz_core.images import load_image; "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"r = load_image({str(bomb)!r}, on_error='ignore'); "
        "print(r, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    result, added_kb = out.stdout.split()
    assert result == "None" and int(added_kb) < 1_000_000, out.stdout + out.stderr


@pytest.mark.parametrize("factor", [(2, 1), (1, 3), (4, 4)])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_claiming_more_pixels_than_it_holds_is_an_error(tmp_path, factor, subsampling):
    import struct

    arr = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = _save(Image.fromarray(arr), tmp_path / "good.jpg", quality=90, subsampling=subsampling)
    data = bytearray(good.read_bytes())
    sof = data.find(b"\xff\xc0")
    height, width = struct.unpack(">HH", data[sof + 5 : sof + 9])
    data[sof + 5 : sof + 9] = struct.pack(">HH", height * factor[0], width * factor[1])
    liar = tmp_path / "liar.jpg"
    liar.write_bytes(bytes(data))
    _expect_unreadable(liar, "declares")
    assert load_image(good).size == (64, 48)


def test_genuine_jpeg_ending_in_mid_grey_is_read(tmp_path):
    arr = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    arr[24:] = 128  # the libjpeg fill colour, in the data for real
    for name, kw in (("grey.jpg", {}), ("grey_small.jpg", {"subsampling": 2}), ("grey_gray.jpg", {})):
        img = Image.fromarray(arr if name != "grey_gray.jpg" else arr[..., 0])
        path = _save(img, tmp_path / name, quality=90, **kw)
        out = np.asarray(load_image(path))
        assert out.shape == (64, 64, 3) and (out[-1] == 128).all()
    flat = _save(Image.new("RGB", (40, 40), (128, 128, 128)), tmp_path / "flat.jpg")
    assert load_image(flat).size == (40, 40)


def test_to_tensor01():
    x = images.to_tensor01(_rgb((255, 0, 51), size=(5, 3)))
    assert x.shape == (3, 3, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


# ---------------------------------------------------------------------------- folders


def _tree(root: Path, layout: dict[str, int]) -> Path:
    for folder, count in layout.items():
        for k in range(count):
            _save(_rgb((10 * k, 50, 90), size=(8, 8)), root / folder / f"img_{k}.JPEG")
    return root


def test_labels_are_wnid_indices_not_folder_order(tmp_path):
    root = _tree(tmp_path / "ds", {TABBY: 2, TOILET_TISSUE: 1, TENCH: 3})
    ds = ImageFolderDataset(root)
    assert len(ds) == 6 and ds.layout == "classes" and ds.label_space == "imagenet"
    assert ds.targets == [0, 0, 0, 281, 281, 999]
    wnids = imagenet_wnids()
    assert all(wnids[label] == path.parent.name for path, label in ds.samples)
    x, label, index = ds[4]
    assert x.shape == (3, 8, 8) and label == 281 and index == 4
    assert ds.class_name(999) == "toilet tissue"
    assert len(list(ds)) == 6  # IndexError ends plain iteration


def test_non_wnid_and_mixed_folders(tmp_path):
    ds = ImageFolderDataset(_tree(tmp_path / "own", {"dogs": 1, "cats": 2}))
    assert ds.label_space == "folders" and ds.classes == ["cats", "dogs"] and ds.targets == [0, 0, 1]
    assert ds.class_name(1) == "dogs"
    with pytest.warns(UserWarning, match="misc"):
        mixed = ImageFolderDataset(_tree(tmp_path / "mixed", {TENCH: 1, "misc": 1}))
    assert mixed.targets == [-1, 0]


def test_flat_folder_unlabelled_and_with_loc_csv(tmp_path):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for k in range(1, 4):
        _save(_rgb(size=(8, 8)), val / f"ILSVRC2012_val_{k:08d}.JPEG")
    ds = ImageFolderDataset(val, labels_file=None)
    assert ds.layout == "flat" and ds.targets == [-1, -1, -1]
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000001,{TABBY} 1 2 3 4 \n"
        f"ILSVRC2012_val_00000003,{TENCH} 1 2 3 4 {TENCH} 0 0 5 5\n"
    )
    assert find_dataset("val", root=tmp_path) == val  # Kaggle layout
    labelled = ImageFolderDataset(find_dataset("val", root=tmp_path))
    assert labelled.targets == [281, -1, 0]


def test_user_imagenet_layout_and_env(tmp_path, monkeypatch):
    _tree(tmp_path / "val", {TENCH: 1})
    assert find_dataset("val", root=tmp_path) == tmp_path / "val"
    monkeypatch.setenv("VITVIZ_DATA", str(tmp_path))
    assert find_dataset("val") == tmp_path / "val"


def test_missing_and_empty_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"nope.*VITVIZ_DATA") as err:
        find_dataset("nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty.*no images.*VITVIZ_DATA"):
        find_dataset("empty")
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")


def test_subsets_are_deterministic(tmp_path):
    root = _tree(tmp_path / "ds", {TENCH: 4, TABBY: 4, TOILET_TISSUE: 4})
    per = ImageFolderDataset(root, per_class=2)
    assert per.targets == [0, 0, 281, 281, 999, 999]
    assert [p.name for p, _ in per.samples[:2]] == ["img_0.JPEG", "img_1.JPEG"]
    few = ImageFolderDataset(root, max_images=3)
    assert few.targets == [0, 281, 999]  # spread over the sorted list, not the first 3
    assert few.samples == ImageFolderDataset(root, max_images=3).samples
    both = ImageFolderDataset(root, per_class=1, max_images=2)
    assert len(both) == 2


def test_bad_file_is_marked_not_substituted_and_not_rewarned(tmp_path):
    root = _tree(tmp_path / "ds", {TENCH: 2, TABBY: 2})
    bad = root / TENCH / "img_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    ds = ImageFolderDataset(root)
    with pytest.warns(ImageReadWarning, match="img_1.JPEG"):
        assert ds[1] == data.Unreadable(1, "img_1.JPEG")  # never the next sample in its place
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are not re-read or re-warned
        batches = list(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=data.collate_skipping))
    assert batches[0][0].shape == (3, 3, 8, 8) and batches[0][2].tolist() == [0, 2, 3]
    assert batches[0][1].tolist() == [0, 281, 281] and batches[0].skipped == [1]
    with pytest.raises(DataError, match="img_1.JPEG"):
        ImageFolderDataset(root, on_error="raise")[1]


# ---------------------------------------------------------------------------- boxes

_XML = """<annotation>
  <folder>val</folder>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>n01751748</name>
    <bndbox><xmin>111</xmin><ymin>108</ymin><xmax>441</xmax><ymax>374</ymax></bndbox></object>
  <object><name>n01751748</name>
    <bndbox><xmin>0</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
</annotation>
"""


def test_read_ilsvrc_xml(tmp_path):
    path = tmp_path / "ILSVRC2012_val_00000001.xml"
    path.write_text(_XML)
    size, boxes = read_ilsvrc_xml(path)
    assert size == (500, 375)
    assert boxes == [Box("n01751748", 111, 108, 441, 374), Box("n01751748", 0, 1, 10, 20)]
    assert data.read_ilsvrc_xml_dir(tmp_path)["ILSVRC2012_val_00000001"][0] == (500, 375)


@pytest.mark.parametrize(
    "text, match",
    [
        (_XML.replace("</folder>", ""), r"bad.xml:\d+: malformed XML"),
        (_XML.replace("<xmax>441</xmax>", ""), r"bad.xml:5: <bndbox> has no <xmax>"),
        (_XML.replace("<ymin>108</ymin>", "<ymin>1o8</ymin>"), r"bad.xml:5: <ymin> is not a number"),
        (_XML.replace("<size>", "<sise>").replace("</size>", "</sise>"), r"bad.xml:1: .*no <size>"),
        ("", r"bad.xml:1:"),
    ],
)
def test_malformed_xml(tmp_path, text, match):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_ilsvrc_xml(path)


def test_read_loc_val_solution(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
        "ILSVRC2012_val_00020259,n03584829 96 83 400 355\n"
    )
    boxes = read_loc_val_solution(path)
    assert list(boxes) == ["ILSVRC2012_val_00008726", "ILSVRC2012_val_00020259"]
    assert boxes["ILSVRC2012_val_00008726"][1] == Box("n02119789", 44, 21, 322, 295)


@pytest.mark.parametrize(
    "body, match",
    [
        ("ImageId,PredictionString\na,n1 1 2 3 4\nb,n1 1 2 3\n", r"bad.csv:3: .*found 4 tokens"),
        ("ImageId,PredictionString\na,n1 1 2 x 4\n", r"bad.csv:2: .*non-numeric"),
        ("ImageId,PredictionString\na,1 1 2 3 4\n", r"bad.csv:2: expected a wnid"),
        ("ImageId,PredictionString\na,n1 5 2 3 4\n", r"bad.csv:2: .*invalid"),
        ("ImageId,PredictionString\na,n1 1 2 3 4,extra\n", r"bad.csv:2: expected 2 columns"),
        ("id,boxes\na,n1 1 2 3 4\n", r"bad.csv:1: expected header"),
        ("", r"bad.csv:1: empty"),
    ],
)
def test_malformed_csv(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=match):
        read_loc_val_solution(path)


def test_box_readers_missing_file(tmp_path):
    with pytest.raises(DataError, match="gone.csv"):
        read_loc_val_solution(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="gone.xml"):
        read_ilsvrc_xml(tmp_path / "gone.xml")


def test_boxes_to_mask():
    full = boxes_to_mask([Box("n0", 0, 0, 499, 374)], image_size=(500, 375))
    assert full.shape == (375, 500) and full.dtype == torch.bool and bool(full.all())
    assert bool(boxes_to_mask([(0, 0, 500, 375)], (500, 375), out_size=(224, 224)).all())
    assert bool(boxes_to_mask([Box("n0", 0, 0, 499, 374)], (500, 375), out_size=(14, 14)).all())
    left = boxes_to_mask([(0, 0, 49, 49)], image_size=(100, 50), out_size=(10, 10))  # left half
    assert left.shape == (10, 10) and bool(left[:, :5].all()) and not bool(left[:, 5:].any())
    union = boxes_to_mask([(0, 0, 9, 9), (90, 40, 99, 49)], image_size=(100, 50))
    assert int(union.sum()) == 200
    tiny = boxes_to_mask([(50, 20, 50, 20)], image_size=(100, 50), out_size=(7, 7))
    assert int(tiny.sum()) == 1  # a box smaller than a mask pixel still marks one
    assert not bool(boxes_to_mask([], (10, 10)).any())
    assert not bool(boxes_to_mask([(200, 200, 300, 300)], (100, 50), out_size=(8, 8)).any())


# ---------------------------------------------------------------------------- gallery / default


def test_gallery_has_real_rgb_photos():
    gallery = gallery_dataset()
    assert "gallery" in gallery.description
    colour = 0
    for i in range(len(gallery)):
        img = gallery.image(i)
        assert img is not None and img.mode == "RGB" and min(img.size) >= 200
        arr = np.array(img).astype(int)
        if np.abs(arr[..., 0] - arr[..., 1]).mean() > 3:  # not gray replicated to RGB
            colour += 1
    assert colour >= 6
    labels = dict(zip(gallery.names, gallery.targets))
    assert labels["chelsea"] == imagenet_wnids().index(TABBY)
    assert all(-1 <= label < 1000 for label in gallery.targets)
    x, label, index = gallery[0]
    assert x.ndim == 3 and x.shape[0] == 3 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_default_dataset_falls_back_to_gallery(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_DATA", str(tmp_path))
    with pytest.warns(UserWarning, match="gallery"):
        ds = default_dataset()
    assert "gallery" in ds.description and len(ds) >= 6
    _tree(tmp_path / "imagenet-val-1300", {TENCH: 2})
    ds = default_dataset(transform=lambda im: images.to_tensor01(im)[:, :4, :4])
    assert isinstance(ds, ImageFolderDataset) and "imagenet-val-1300" in ds.description
    assert ds[0][0].shape == (3, 4, 4)


# ---------------------------------------------------------------------------- shared data


@pytest.mark.slow
@pytest.mark.shared
def test_shared_imagenet_val_1300():
    try:
        root = find_dataset("imagenet-val-1300")
    except DataError as exc:
        pytest.skip(f"shared data not available: {exc}")
    ds = ImageFolderDataset(root)
    assert len(ds) == 1300
    labels = ds.targets
    assert all(0 <= label < 1000 for label in labels) and len(set(labels)) == 725
    wnids = imagenet_wnids()
    assert all(wnids[label] == path.parent.name for path, label in ds.samples)
    x, label, _ = ds[0]
    assert x.shape == (3, 227, 227) and label == 0
