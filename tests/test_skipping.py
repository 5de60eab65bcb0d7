"""Unreadable files are absent from every statistic (issue 12, items 4 and 5).

A folder mixing good and bad files (truncated JPEG, zero-byte file, symlink loop, dangling
link) must give exactly the good images, with their own labels, through every consumer:
``make_loader`` (also with worker processes), ``evaluate_variants`` / the masking experiment
(accuracy n and intervals), the exemplar search (top-k never repeats or includes a bad
file) and the result records (``n_skipped``). Class folders that are symbolic links never
relabel images. All fixtures are written into tmp_path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from loaded import loaded
from vitviz_core.data import DataError, ImageFolderDataset, Unreadable, collate_skipping, skipped_files
from vitviz_core.evaluate.common import evaluate_variants, make_loader
from vitviz_core.evaluate.records import ResultRecord
from vitviz_core.images import ImageReadWarning

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TENCH, GOLDFISH, TABBY = "n01440764", "n01443537", "n02123045"  # ImageNet classes 0, 1, 281


def _jpeg(path: Path, value: int, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(value).integers(0, 256, (size, size, 3), dtype=np.uint8)
    arr[:] = np.clip(arr.astype(int) // 4 + value, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path


@pytest.fixture()
def mixed(tmp_path: Path) -> tuple[Path, dict[str, int], set[str]]:
    """``(root, {good file name: label}, bad file names)``: 5 good and 4 bad files."""
    root = tmp_path / "data" / "mixed"
    good = {}
    for k in range(3):
        good[_jpeg(root / TENCH / f"tench_{k}.JPEG", 40 + 60 * k).name] = 0
    for k in range(2):
        good[_jpeg(root / TABBY / f"tabby_{k}.JPEG", 30 + 80 * k).name] = 281
    cut = _jpeg(root / TENCH / "tench_cut.JPEG", 99)
    cut.write_bytes(cut.read_bytes()[:300])  # truncated in the scan data
    (root / TABBY / "tabby_empty.JPEG").write_bytes(b"")  # zero bytes
    (root / TABBY / "tabby_loop.JPEG").symlink_to(root / TABBY / "tabby_loop.JPEG")
    (root / TENCH / "tench_gone.JPEG").symlink_to(tmp_path / "deleted.JPEG")
    (root / TABBY / "folder.JPEG").mkdir()  # a folder named like an image
    bad = {"tench_cut.JPEG", "tabby_empty.JPEG", "tabby_loop.JPEG", "tench_gone.JPEG"}
    return root, good, bad


def _dataset(root: Path, **kw) -> ImageFolderDataset:
    from torchvision import transforms as T

    return ImageFolderDataset(root, transform=T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), **kw)


def test_getitem_marks_bad_files_instead_of_substituting(mixed):
    root, good, bad = mixed
    ds = _dataset(root)
    assert len(ds) == 9
    names = [p.name for p, _ in ds.samples]
    i = names.index("tench_cut.JPEG")
    with pytest.warns(ImageReadWarning, match="tench_cut.JPEG"):
        item = ds[i]
    assert item == Unreadable(i, "tench_cut.JPEG")
    batch = collate_skipping([ds[names.index("tench_0.JPEG")], item])
    assert batch[0].shape == (1, 3, 32, 32) and batch[2].tolist() == [names.index("tench_0.JPEG")]
    assert batch.skipped == [i] and batch.skipped_files == ["tench_cut.JPEG"]
    with pytest.raises(DataError, match="tench_cut.JPEG"):
        _dataset(root, on_error="raise")[i]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_each_good_image_once_with_its_label(mixed, workers):
    root, good, bad = mixed
    ds = _dataset(root, on_error="ignore")
    names = [p.name for p, _ in ds.samples]
    loader = make_loader(ds, batch_size=2, num_workers=workers)
    seen: list[int] = []
    labels: list[int] = []
    for batch in loader:
        seen += batch[2].tolist()
        labels += batch[1].tolist()
    assert sorted(names[i] for i in seen) == sorted(good)  # each good file exactly once
    assert [good[names[i]] for i in seen] == labels  # with its own label
    assert loader.n_images == 5 and loader.n_skipped == 4
    assert set(loader.skipped.values()) == bad
    assert skipped_files(ds) == loader.skipped  # recorded in this process


def test_evaluate_variants_and_record_count_only_good_images(mixed):
    root, good, bad = mixed
    ds = _dataset(root, on_error="ignore")
    record = ResultRecord.start("test", None, ds)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 1000))
    corr = evaluate_variants(model, make_loader(ds, batch_size=3), lambda x, *_: {"full": x}, progress=False)
    record.finish()
    assert len(corr.labels) == 5 and len(set(corr.indices.tolist())) == 5
    assert sorted(corr.labels.tolist()) == [0, 0, 0, 281, 281]
    assert corr.correct["full"][1].shape == (5,) and corr.n_skipped == 4
    assert record.data["n_images"] == 5 and record.data["n_files"] == 9 and record.data["n_skipped"] == 4
    assert sorted(record.data["skipped_files"]) == sorted(bad)


def test_masking_experiment_n_and_intervals_exclude_bad_files(mixed):
    from vitviz_core.evaluate.masking import masking_experiment

    root, good, bad = mixed
    model = loaded(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 1000)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageReadWarning)
        res = masking_experiment(
            model,
            masks=lambda x: x[:, 0] > 0.5,
            data_name="mixed",
            data_root=root.parent,
            batch_size=4,
            n_boot=50,
            progress=False,
        )["toy"]
    assert res.top1["full"].n == 5 and res.top5["background"].n == 5
    assert res.record.data["n_skipped"] == 4 and res.record.data["n_images"] == 5


def test_exemplar_topk_never_includes_or_repeats_a_bad_file(mixed, tmp_path, monkeypatch):
    from vitviz_core.evaluate import exemplars as ex

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    root, good, bad = mixed
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=1,
        embed_dim=16,
        num_heads=2,
        num_classes=10,
    ).eval()
    ds = _dataset(root, on_error="ignore")
    names = [p.name for p, _ in ds.samples]
    res = ex.find_exemplars(vit, ds, ["blocks.0.mlp.hook_post"], k=5, batch_size=2, progress=False)
    for feature in range(8):
        ids = [i for i, _ in res.top("blocks.0.mlp.hook_post", feature)]
        assert sorted(names[i] for i in ids) == sorted(good), ids  # all 5 good, none twice, no bad
    assert res.record["data"]["n_skipped"] == 4 and res.record["data"]["n_images"] == 5


def test_a_pass_over_only_bad_files_is_a_data_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"junk")
    (tmp_path / "y.jpg").write_bytes(b"")
    ds = ImageFolderDataset(tmp_path, on_error="ignore")
    with pytest.raises(DataError, match="2 files, all unreadable"):
        list(make_loader(ds, batch_size=4))


# ---------------------------------------------------------------------------- symbolic links


def test_class_folder_linking_to_the_root_is_not_walked(mixed):
    root, good, bad = mixed
    (root / GOLDFISH).symlink_to(root, target_is_directory=True)  # would relabel every image as 1
    ds = ImageFolderDataset(root, on_error="ignore")
    assert GOLDFISH not in ds.classes and len(ds) == 9
    assert sorted({label for _, label in ds.samples}) == [0, 281]


def test_links_out_of_a_class_folder_and_cycles_are_not_followed(tmp_path):
    root = tmp_path / "ds"
    _jpeg(root / TENCH / "a.JPEG", 10)
    _jpeg(root / TABBY / "b.JPEG", 20)
    outside = _jpeg(tmp_path / "elsewhere" / "c.JPEG", 30).parent
    (root / TENCH / "cycle").symlink_to(root / TENCH, target_is_directory=True)  # a cycle
    (root / TENCH / "to_tabby").symlink_to(root / TABBY, target_is_directory=True)  # into another class
    (root / TENCH / "out").symlink_to(outside, target_is_directory=True)  # out of the class
    (root / GOLDFISH).symlink_to(root / TABBY, target_is_directory=True)  # a second label for b
    ds = ImageFolderDataset(root)
    assert [(p.name, label) for p, label in ds.samples] == [("a.JPEG", 0), ("b.JPEG", 281)]


def test_class_folder_linking_outside_the_root_is_a_class(tmp_path):
    root = tmp_path / "ds"
    _jpeg(root / TENCH / "a.JPEG", 10)
    store = _jpeg(tmp_path / "store" / TABBY / "b.JPEG", 20).parent
    (root / TABBY).symlink_to(store, target_is_directory=True)  # a subset assembled from links
    ds = ImageFolderDataset(root)
    assert [(p.name, label) for p, label in ds.samples] == [("a.JPEG", 0), ("b.JPEG", 281)]


def test_foreground_maps_stay_aligned_over_bad_files(mixed, tmp_path, monkeypatch):
    from vitviz_core.studies_eval.foreground import foreground_maps, saliency_boxes

    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    root, good, bad = mixed
    ds = ImageFolderDataset(root, on_error="ignore")  # untransformed images at their own size
    maps = foreground_maps(ds, lambda x: x[:, :1] * 0 + 0.9, batch_size=4, cache=False)
    assert len(maps) == len(ds) == 9
    for m, (path, _) in zip(maps, ds.samples):
        assert m.shape == ((1, 1) if path.name in bad else (40, 40))
    boxes, n_fallback = saliency_boxes(maps, ds.samples)
    assert n_fallback == 0 and len(boxes) == 9
