"""vitviz_core.chapters.neurons.run on a tiny random timm ViT and CNN, tiny image folders
generated here and a synthetic foreground model: every glue name the chapter's prose uses
is produced, and the results obey the invariants of what they measure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vitviz_core.errors import VitvizError

pytest.importorskip("timm")

BOOK = Path(__file__).resolve().parents[1] / "book" / "neurons.md"
WNIDS = ("n01440764", "n01443537")  # ImageNet classes 0 and 1


def _write_folder(root: Path, per_class: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (64, 64, 3), dtype=np.uint8)  # dark textured background
            a, b = rng.integers(8, 24, 2)
            img[a : a + 32, b : b + 32] = (200, 60 + 120 * k, 40) + rng.integers(
                0, 40, (32, 32, 3)
            )  # the object
            Image.fromarray(img.astype(np.uint8)).save(root / wnid / f"im{i}.png")


def _foreground(x01: torch.Tensor) -> torch.Tensor:
    """Object probability: bright red pixels (the synthetic objects). (B, 3, H, W) -> (B, 1, H, W)."""
    return (x01[:, :1] > 0.6).float()


OVERRIDES = dict(
    n_images=8,
    n_views=4,
    n_cluster=6,
    probe_test=8,
    probe_blocks=(0, 1),
    ratios=(0.25, 0.5),
    bootstrap=50,
    batch_size=4,
    device="cpu",
    image_index=1,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vitviz_core.models import load_model

    data = tmp_path_factory.mktemp("data")
    _write_folder(data / "imagenet-val-1300", 4, 0)
    _write_folder(data / "imagenet-sample-1000", 1, 1)
    mp = pytest.MonkeyPatch()
    mp.setenv("VITVIZ_DATA", str(data))
    # 56 px with 4 px patches: a 14 x 14 grid, as the chapter's g = 14 shuffle assumes
    vit = load_model(
        "vit_tiny_patch16_224",
        weights="random",
        img_size=56,
        patch_size=4,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )
    cnn = load_model("tf_efficientnet_lite0", weights="random", num_classes=10)
    models = dict(vit=vit, cnn=cnn, second_vit=None, foreground=_foreground)
    yield models
    mp.undo()


@pytest.fixture(scope="module")
def res(setup):
    from vitviz_core.chapters import neurons

    return neurons.run(setup, "cpu", **OVERRIDES)


def test_every_glue_name_of_the_chapter_is_produced(res):
    text = BOOK.read_text()
    used = set(re.findall(r"\{glue:text\}`(nr_\w+)`", text)) | set(
        re.findall(r"```\{glue:figure\} (nr_\w+)", text)
    )
    assert used, "the chapter's prose names no glue keys"
    produced = set(res.values) | set(res.figures) | set(res.tables)
    assert sorted(used - produced) == []
    tables = set(re.findall(r'res\.tables\["(nr_\w+)"\]', text))
    assert tables and tables <= set(res.tables)


def test_counts_and_sizes_follow_the_inputs(res, setup):
    v = res.values
    vit = setup["vit"]
    assert (v["nr_n_images"], v["nr_n_views"], v["nr_n_cluster"]) == (8, 4, 6)
    assert v["nr_n_filters"] == vit.model.embed_dim
    assert sum(v[f"nr_count_{k}"] for k in ("colour", "flat", "edge", "texture")) == v["nr_n_filters"]
    assert v["nr_n_tokens"] == 196 and v["nr_grid"] == "14 x 14" and v["nr_p"] == 4
    assert v["nr_n_patches"] == 4 * 196
    assert v["nr_probe_classes"] == 2 and v["nr_probe_test"] == 8 and v["nr_probe_train"] == 2
    assert v["nr_n_neurons"] == len(res.figures["nr_views_fig"].axes) - 1
    assert "vit_tiny_patch16_224" in res.setting and "profile `cpu`" in res.setting
    assert v["nr_dino_sil"] == "(not run)"


def test_tables_have_one_row_per_measured_thing(res):
    t = res.tables
    assert len(t["nr_probe_table"]) == 1 + 2 + 1  # level 0, blocks 0 and 1, the CNN stem
    assert len(t["nr_prop_table"]) == 2  # one row per block
    assert len(t["nr_robust_table"]) == 1 + 5 + 3 * 2  # clean, 5 shuffles, 3 modes x 2 ratios
    assert list(t["nr_cluster_table"].columns) == [
        "vit_tiny_patch16_224, level 0",
        "vit_tiny_patch16_224, last block",
    ]
    assert set(t["nr_cue_table"]["filter class"]) <= {"colour", "edge", "texture", "flat"}
    assert t["nr_cue_table"]["filters"].sum() == res.values["nr_n_filters"]


def _interval(text: str) -> tuple[float, float, float]:
    value, low, high = (float(x) for x in re.findall(r"[-+]?\d+\.?\d*", text)[:3])
    return value, low, high


def test_intervals_contain_their_estimates_and_shares_are_shares(res):
    v = res.values
    for key in (
        "nr_probe_l0",
        "nr_probe_last",
        "nr_probe_cnn",
        "nr_pur_l0",
        "nr_pur_last",
        "nr_clean_vit",
        "nr_clean_cnn",
        "nr_g14_vit",
        "nr_dist_first",
        "nr_dist_last",
        "nr_onobj_gap_first",
    ):
        value, low, high = _interval(v[key])
        assert low <= value <= high, key
    for key in ("nr_pur_l0", "nr_pur_last"):
        assert 0.5 <= _interval(v[key])[0] <= 1.0  # purity of two classes is at least the majority share
    rows = res.tables["nr_robust_rows"]
    assert ((rows["acc"] >= 0) & (rows["acc"] <= 1)).all()
    # occluding nothing more than the clean image cannot be undone: shuffle with one tile is the clean image
    clean = rows[(rows["variant"] == "clean")].set_index("model")["acc"]
    g1 = rows[(rows["variant"] == "shuffle-g1")].set_index("model")["acc"]
    assert (clean == g1).all()


def test_figures_draw_something_and_the_explorer_matches_its_static_figure(res):
    from matplotlib.figure import Figure

    for name, fig in res.figures.items():
        assert isinstance(fig, Figure) and fig.axes, name
    ex = res.widgets["nr_explorer"]
    fig = ex.default_figure()
    assert len(fig.axes) == len(res.figures["nr_prop_obj_fig"].axes)
    a = np.asarray(fig.axes[1].images[0].get_array())
    b = np.asarray(res.figures["nr_prop_obj_fig"].axes[1].images[0].get_array())
    np.testing.assert_array_equal(a, b)
    pytest.importorskip("ipywidgets")
    box = ex.widget()
    assert set(box.controls) >= {"image", "neuron", "row", "col", "button", "output"}
    box.controls["row"].value = 0
    box.controls["button"].click()
    assert box.controls["status"].value.startswith("done"), box.controls["status"].value
    assert box.controls["output"].outputs[0]["data"]["image/png"]


def test_numbers_are_json_and_a_section_alone_gives_the_same_values(res, setup):
    from vitviz_core.chapters import neurons

    json.dumps(res.numbers(), default=str)
    alone = neurons.run(setup, "cpu", **OVERRIDES, sections=("level0",))
    shared = [
        k for k in alone.values if k.startswith(("nr_count", "nr_edge", "nr_colour", "nr_lum", "nr_patch"))
    ]
    assert shared and all(alone.values[k] == res.values[k] for k in shared)
    assert "nr_probe_l0" not in alone.values and "nr_robust_fig" not in alone.figures


def test_bad_settings_are_clear_errors(setup):
    from vitviz_core.chapters import neurons
    from vitviz_core.profiles import Profile

    fields = set(Profile.__dataclass_fields__)
    assert set(neurons.KNOBS.values()) <= fields  # every chapter knob lives in Profile
    with pytest.raises(VitvizError, match="unknown setting"):
        neurons.run(setup, "cpu", n_imgs=3)
    with pytest.raises(VitvizError, match="unknown section"):
        neurons.run(setup, "cpu", sections=("levelzero",))
    with pytest.raises(VitvizError, match="unknown model role"):
        neurons.run({"transformer": "vit-ti16"}, "cpu")


@pytest.mark.shared
@pytest.mark.slow
def test_real_models_level0_section():
    from vitviz_core.chapters import neurons
    from vitviz_core.errors import DataError, WeightsUnavailableError

    try:
        res = neurons.run(
            {"second_vit": None}, "cpu", n_images=4, n_views=2, n_cluster=2, sections=("level0",)
        )
    except (WeightsUnavailableError, DataError) as exc:
        pytest.skip(f"shared weights/data not available: {exc}")
    v = res.values
    assert v["nr_vit_name"] == "vit-ti16" and v["nr_n_images"] == 4
    assert sum(v[f"nr_count_{k}"] for k in ("colour", "flat", "edge", "texture")) == v["nr_n_filters"]
