"""vitviz_core.chapters.{token_mixing, vit_vs_cnn, language_supervision, model_families,
feature_visualization}.run on tiny random timm models and tiny generated image folders: every
glue name the chapter's prose uses is produced, the numbers obey what they measure, and bad
settings are clear errors. (The neurons chapter has its own file.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vitviz_core.errors import VitvizError

pytest.importorskip("timm")

BOOK = Path(__file__).resolve().parents[1] / "book"
WNIDS = ("n01440764", "n01443537")  # ImageNet classes 0 and 1


def _write_folder(root: Path, per_class: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)  # dark textured background
            a, b = rng.integers(4, 20, 2)
            img[a : a + 24, b : b + 24] = (200, 60 + 120 * k, 40) + rng.integers(
                0, 40, (24, 24, 3)
            )  # the object
            Image.fromarray(img.astype(np.uint8)).save(root / wnid / f"im{i}.png")


class RedForeground(nn.Module):
    """Object probability: bright red pixels (the synthetic objects). (B, 3, H, W) -> (B, 1, H, W)."""

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01[:, :1] > 0.6).float()


def _glue_names(chapter: str, prefix: str) -> set[str]:
    text = (BOOK / f"{chapter}.md").read_text()
    return set(re.findall(rf"\{{glue:text\}}`({prefix}_\w+)`", text)) | set(
        re.findall(rf"```\{{glue:figure\}} ({prefix}_\w+)", text)
    )


def _shown_names(chapter: str) -> set[str]:
    text = (BOOK / f"{chapter}.md").read_text()
    return {n for args in re.findall(r"res\.show\(([^)]*)\)", text) for n in re.findall(r'"(\w+)"', args)}


def _interval(text: str) -> tuple[float, float, float]:
    value, low, high = (float(x) for x in re.findall(r"[-+]?\d+\.?\d*", text)[:3])
    return value, low, high


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    _write_folder(data / "imagenet-val-1300", 4, 0)
    _write_folder(data / "imagenet-sample-1000", 2, 1)
    mp = pytest.MonkeyPatch()
    mp.setenv("VITVIZ_DATA", str(data))
    mp.setenv("VITVIZ_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield data
    mp.undo()


def _vit(depth: int = 4, seed: int = 0) -> object:
    from vitviz_core.models import load_model

    torch.manual_seed(seed)
    model = load_model(
        "vit_tiny_patch16_224",
        weights="random",
        img_size=32,
        patch_size=8,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )
    with torch.no_grad():
        model.model.head.bias[0] += 5.0  # class 0 (half of the images) wins: accuracies are not all 0
    return model


@pytest.fixture(scope="module")
def vit(env):
    return _vit()


FAST = dict(bootstrap=20, batch_size=4, device="cpu")


# ----------------------------------------------------------------------------- token mixing


@pytest.fixture(scope="module")
def tm(vit):
    from vitviz_core.chapters import token_mixing

    return token_mixing.run({"vit": vit}, "cpu", n_table=8, n_sweep=6, n_maps=8, **FAST)


def test_token_mixing_produces_every_glue_name_and_its_numbers_hold(tm):
    produced = set(tm.values) | set(tm.figures) | set(tm.tables)
    assert sorted(_glue_names("token_mixing", "tm") - produced) == []
    assert _shown_names("token_mixing") - {"tm_dino_table1", "tm_dino_sweep_fig"} <= produced
    v = tm.values
    assert (v["tm_depth"], v["tm_last"], v["tm_n_table"], v["tm_n_sweep"], v["tm_spread_n"]) == (
        4,
        3,
        8,
        6,
        8,
    )
    for key in ("tm_nat1", "tm_iso1", "tm_pmean1", "tm_drop_last", "tm_blind_last", "tm_spread_last"):
        value, low, high = _interval(v[key])
        assert 0 <= low <= value <= high <= 100, key
    assert v["tm_dino_text"].startswith("*Not run on the `cpu` profile.*")  # the cpu profile skips the probe
    assert v["tm_cause_verdict"] and v["tm_blind_verdict"].startswith("so")
    # isolating CLS from block 0 is the natural network: the sweep's L = 0 equals natural accuracy
    sweep = tm.data["sweep"]
    assert sweep.isolate[0][1].value == pytest.approx(sweep.natural[1].value)
    json.dumps(tm.numbers(), default=str)


def test_token_mixing_sections_and_errors(vit):
    from vitviz_core.chapters import token_mixing

    alone = token_mixing.run({"vit": vit}, "cpu", n_table=8, n_sweep=6, sections=("table",), **FAST)
    assert "tm_nat1" in alone.values and "tm_sweep_fig" not in alone.figures and not alone.widgets
    with pytest.raises(VitvizError, match="unknown setting"):
        token_mixing.run({"vit": vit}, "cpu", n_tabel=3)
    with pytest.raises(VitvizError, match="unknown model role"):
        token_mixing.run({"cnn": vit}, "cpu")


# ----------------------------------------------------------------------------- ViT vs CNN


@pytest.fixture(scope="module")
def vc(vit):
    from vitviz_core.chapters import vit_vs_cnn
    from vitviz_core.models import load_model

    cnn = load_model("tf_efficientnet_lite0", weights="random", num_classes=10)
    with torch.no_grad():
        cnn.model.classifier.bias[0] += 50.0  # class 0 wins, as for the ViT
    return vit_vs_cnn.run(
        {"vit": vit, "cnn": cnn, "foreground": RedForeground()},
        "cpu",
        n_masking=8,
        n_frequency=8,
        low_cutoffs=(4, 8),
        high_cutoffs=(8,),
        gauss_cutoffs=(4, 8),
        bg_layer=2,
        **FAST,
    )


def test_vit_vs_cnn_produces_every_glue_name_and_its_numbers_hold(vc):
    produced = set(vc.values) | set(vc.figures) | set(vc.tables)
    assert sorted(_glue_names("vit_vs_cnn", "vc") - produced) == []
    assert _shown_names("vit_vs_cnn") - {"vc_fills_table"} <= produced  # one fill: no fills table
    v = vc.values
    assert (v["vc_n_mask"], v["vc_n_freq"], v["vc_bg_layer"], v["vc_fill"], v["vc_mid"]) == (
        8,
        8,
        2,
        "black",
        "8",
    )
    for key in ("vc_vit_full1", "vc_cnn_full1", "vc_vit_fg5n", "vc_cnn_bg5n"):
        value, low, high = _interval(v[key])
        assert low <= value <= high, key
    assert 0 <= int(v["vc_vit_above"]) <= 100 and 0 <= int(v["vc_bg_area"]) <= 100
    assert v["vc_n_vit_feats"] <= 4 * 32  # FFN width of the tiny ViT
    assert "other fills" in v["vc_fills_text"].lower()
    assert len(vc.tables["vc_low_table"]) == 2 + 1 and len(vc.tables["vc_high_table"]) == 1 + 1  # + "none"
    fig = vc.widgets["vc_explorer"].default_figure()
    assert fig.axes


def test_vit_vs_cnn_frequency_alone_skips_the_foreground_model(vit):
    from vitviz_core.chapters import vit_vs_cnn

    class Exploding(nn.Module):
        def forward(self, x):
            raise AssertionError("the foreground model ran")

    other = _vit(depth=2, seed=2)
    other.name = "second-vit"  # the tables name the two models' columns
    res = vit_vs_cnn.run(
        {"vit": vit, "cnn": other, "foreground": Exploding()},
        "cpu",
        n_frequency=4,
        low_cutoffs=(4, 8),
        high_cutoffs=(8,),
        gauss_cutoffs=(8,),
        sections=("frequency",),
        **FAST,
    )
    assert res.values["vc_n_freq"] == 4 and "vc_table2" not in res.tables
    with pytest.raises(VitvizError, match="unknown section"):
        vit_vs_cnn.run({"vit": vit}, "cpu", sections=("masks",))


# ----------------------------------------------------------------------------- language supervision


def test_language_supervision_without_clip(vit):
    from vitviz_core.chapters import language_supervision

    res = language_supervision.run(
        {"clip": None, "contrast": vit, "ssl": _vit(seed=1)}, "cpu", span_k=3, eval_images=8, **FAST
    )
    produced = set(res.values) | set(res.figures)
    assert sorted(_glue_names("language_supervision", "ls") - produced) == []
    v = res.values
    assert v["ls_clip_status"] == "not requested" and "not CLIP" in v["ls_who"]
    assert v["ls_sup_hook"] == "blocks.2.mlp.hook_post" and v["ls_sup_nf"] == 4 * 32
    assert v["ls_pool_n"].startswith("8 images") and "2 classes" in v["ls_pool_n"]
    span = res.data["span_sup"].summary["same_pair"]
    assert 0 <= span.low <= span.value <= span.high <= 1
    assert set(res.widgets) == {"ls_explorer"}


def test_span_verdict_reads_the_intervals():
    from vitviz_core.chapters.language_supervision import span_verdict
    from vitviz_core.evaluate.stats import Estimate

    hi, lo = Estimate(0.5, 0.4, 0.6, 10, "test"), Estimate(0.2, 0.1, 0.3, 10, "test")
    assert span_verdict("a", "b", hi, lo).startswith("a's late features are more")
    assert span_verdict("a", "b", lo, hi).startswith("b's late features are more")
    assert "overlap" in span_verdict("a", "b", hi, hi)


# ----------------------------------------------------------------------------- model families


def test_model_families_on_a_tiny_model(vit):
    from vitviz_core.chapters import model_families

    res = model_families.run(
        [vit],
        "cpu",
        families={"ViT": "vit_tiny_patch16_224"},
        steps=2,
        n_augment=1,
        n_features=2,
        device="cpu",
    )
    assert sorted(_glue_names("model_families", "mf") - set(res.values) - set(res.figures)) == []
    table = res.tables["mf_hooks_table"]
    assert set(table["family"]) == {"ViT"} and table["hook"].str.startswith("blocks.0.").all()
    assert res.values["mf_n_families"] == 1 and res.values["mf_n_hooks"] > len(table)
    assert res.values["mf_shown"] == f"{vit.name} (blocks.1.mlp.hook_post)"  # half-way: block 1 of 4
    assert len(res.figures["mf_fig"].axes) >= 2


# ----------------------------------------------------------------------------- feature visualization


@pytest.fixture(scope="module")
def fv(vit):
    from vitviz_core.chapters import feature_visualization

    return feature_visualization.run(
        {"vit": vit, "second": _vit(depth=2, seed=1)},
        "cpu",
        layer=1,
        steps=2,
        n_augment=1,
        n_features=2,
        pool_images=4,
        device="cpu",
    )


def test_feature_visualization_produces_every_glue_name(fv):
    produced = set(fv.values) | set(fv.figures) | set(fv.tables)
    assert sorted(_glue_names("feature_visualization", "fv") - produced) == []
    assert _shown_names("feature_visualization") <= produced
    v = fv.values
    assert (v["fv_steps"], v["fv_augment"], v["fv_layer"], v["fv_profile_passes"]) == (2, 1, 1, 2)
    assert v["fv_layers"] == "0, 1, 2, 3" and v["fv_dino_layers"] == "0"  # cpu: one late block of the second
    assert len(fv.tables["fv_ablation_table"]) == 5 and len(fv.tables["fv_qkv_table"]) == 4
    assert list(fv.tables["fv_cmp_table"]["recipe"]) == ["paper", "fourier", "maco"]
    assert fv.data["ablation"].images.shape == (5 * 2, 3, 32, 32)
    assert float(v["fv_plain_hf"]) > 0


def test_feature_visualization_sections_and_errors(vit):
    from vitviz_core.chapters import feature_visualization

    res = feature_visualization.run(
        {"vit": vit}, "cpu", sections=("hooks",), steps=1, n_augment=1, features=[3], layer=1, device="cpu"
    )
    assert set(res.figures) == {"fv_qkv_fig"} and res.data["hooks"].labels[0].startswith("#3")
    with pytest.raises(VitvizError, match="unknown section"):
        feature_visualization.run({"vit": vit}, "cpu", sections=("depths",))


def test_every_chapter_knob_is_a_profile_field():
    from vitviz_core.chapters import feature_visualization, token_mixing, vit_vs_cnn
    from vitviz_core.profiles import Profile, get_profile

    fields = set(Profile.__dataclass_fields__)
    for mod in (feature_visualization, token_mixing, vit_vs_cnn):
        assert set(mod.KNOBS.values()) <= fields, mod.__name__
    cpu, full = get_profile("cpu"), get_profile("full")
    assert (
        cpu.token_table_images and full.token_table_images is None and full.token_dino and not cpu.token_dino
    )
    assert len(full.low_cutoffs) > len(cpu.low_cutoffs) and "black" in cpu.masking_fills


def test_show_skips_what_a_run_did_not_produce_and_explore_returns_the_static_figure(capsys):
    import pandas as pd

    from vitviz_core.chapters import ChapterResult

    class Explorer:
        def widget(self):
            return "the widget"

        def default_figure(self):
            return "the static figure"

    res = ChapterResult(
        "x",
        "setting",
        None,
        values={"x_text": "*hello*"},
        tables={"x_t": pd.DataFrame({"a": [1.234]})},
        widgets={"x_explorer": Explorer()},
    )
    res.show("x_text", "x_missing", "x_t")
    out = capsys.readouterr().out
    assert "Markdown" in out and "Styler" in out and "missing" not in out
    assert res.explore("x_explorer") == "the static figure"
    assert res.numbers() == {"x_text": "*hello*", "x_t": [{"index": 0, "a": 1.234}]}
