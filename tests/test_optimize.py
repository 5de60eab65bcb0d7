"""The augmented feature-visualization optimizer: augmentations, recipes, objectives, the loop
and the ``render`` command line, on tiny random timm models of every family."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch

from vitviz_core import cli
from vitviz_core.augment import (
    ColorShift,
    EnsembleAugment,
    FeatureStreams,
    GaussianNoise,
    Jitter,
    noise_std_at,
    stream_seeds,
)
from vitviz_core.errors import HookError, VitvizError
from vitviz_core.objectives import Objective, ObjectiveContext, channel, diversity, neuron, tv
from vitviz_core.recipes import PAPER, RELEASED, get_recipe

# ---------------------------------------------------------------------------------------------
# tiny random models, one per family
# ---------------------------------------------------------------------------------------------

TINY = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)),
    "deit": (
        "deit_tiny_distilled_patch16_224",
        dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
    ),
    "dinov2": (
        "vit_small_patch14_reg4_dinov2",
        dict(img_size=28, patch_size=7, depth=2, embed_dim=32, num_heads=2),
    ),
    "clip": (
        "vit_base_patch16_clip_224",
        dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
    ),
    "pit": (
        "pit_ti_224",
        dict(img_size=32, patch_size=8, stride=4, base_dims=[8, 8], depth=[1, 1], heads=[2, 4]),
    ),
    "coat": (
        "coat_lite_tiny",
        dict(
            img_size=32,
            embed_dims=[16, 16, 16, 16],
            serial_depths=[1, 1, 1, 1],
            num_heads=8,
            mlp_ratios=[2, 2, 2, 2],
        ),
    ),
    "convit": (
        "convit_tiny",
        dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, local_up_to_layer=1),
    ),
    "twins": (
        "twins_svt_small",
        dict(
            img_size=32,
            embed_dims=(16, 32),
            depths=(1, 1),
            num_heads=(1, 2),
            sr_ratios=(2, 1),
            wss=(2, 2),
            mlp_ratios=(2, 2),
            patch_size=4,
        ),
    ),
    "cnn": ("resnet18", dict(layers=[1, 1, 1, 1])),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    spin-waiting makes them 20-50x slower; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(family: str) -> torch.nn.Module:
    arch, kwargs = TINY[family]
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).eval()


def input_size(family: str) -> int:
    return 28 if family == "dinov2" else 32


NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def ffn_hook(model: torch.nn.Module) -> str:
    """An FFN hook (GELU output of the first MLP layer) from the model's own hook list; for a CNN
    the last block-level NCHW hook."""
    from vitviz_core.hooks import list_hooks

    names = [s.name for s in list_hooks(model)]
    mlp = [n for n in names if n.endswith("mlp.hook_post")]
    if mlp:
        return mlp[-1]
    nchw = [s.name for s in list_hooks(model) if s.layout == "NCHW" and s.channels > 0]
    assert nchw, names
    return nchw[len(nchw) // 2]


def fast_recipe(**kw):
    base = dict(steps=6, n_augment=2, jitter=4)
    base.update(kw)
    return base


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------


def test_paper_recipe_matches_appendix_b() -> None:
    r = PAPER
    assert (r.n_augment, r.jitter, r.jitter_mode) == (8, 32, "per_copy")
    assert (r.color_mode, r.color_mu, r.color_log_sigma) == ("affine", 1.0, 1.0)
    assert (r.noise_mode, r.noise_std, r.noise_schedule) == ("pixel", 0.5, "linear")
    assert r.order == ("jitter", "color", "noise")  # GS(CS(Jitter(x)))
    assert r.tv_weight == 5e-5 and r.tv_on == "image"
    assert r.betas == (0.5, 0.99) and r.lr == 0.1 and r.steps == 400 and r.cosine_t_max == 400
    assert r.clamp == (0.0, 1.0) and r.init == "uniform"
    assert r.reduce == "mean" and not r.extra_batch_factor


def test_released_recipe_matches_the_code() -> None:
    r = RELEASED
    assert (r.n_augment, r.jitter, r.jitter_mode) == (8, 32, "per_batch")
    assert r.color_mode == "standardize" and r.noise_mode == "channel" and r.noise_schedule == "released"
    assert r.order == ("color", "noise", "jitter")
    assert r.extra_batch_factor and r.tv_weight == 5e-4 and r.tv_directions == 4 and r.tv_on == "augmented"
    assert r.steps == 401 and r.cosine_t_max == 400 and r.seed_mode == "feature"
    assert r.betas == (0.5, 0.99) and r.lr == 0.1


def test_get_recipe_overrides_and_errors() -> None:
    assert get_recipe("paper", steps=7).steps == 7 and PAPER.steps == 400
    assert get_recipe(RELEASED, n_augment=2).n_augment == 2
    with pytest.raises(VitvizError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(VitvizError, match="unknown recipe setting"):
        get_recipe("paper", stepz=3)
    with pytest.raises(VitvizError, match="steps must be"):
        get_recipe("paper", steps=0)
    assert PAPER.to_dict()["betas"] == [0.5, 0.99]


# ---------------------------------------------------------------------------------------------
# augmentations: exact small-tensor checks
# ---------------------------------------------------------------------------------------------


def test_jitter_roll_known_tensor() -> None:
    x = torch.tensor([[0.0, 1, 2], [3, 4, 5]]).view(1, 1, 2, 3)
    out = Jitter.apply(x, torch.tensor([[1, -1]]))
    expected = torch.tensor([[4.0, 5, 3], [1, 2, 0]]).view(1, 1, 2, 3)
    assert torch.equal(out, expected)


def test_jitter_draws_from_its_generator() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    g = torch.Generator().manual_seed(123)
    out = Jitter(2, per_copy=True)(x, g)
    ref = torch.randint(-2, 3, (2, 2), generator=torch.Generator().manual_seed(123))
    for b in range(2):
        dy, dx = ref[b].tolist()
        assert torch.equal(out[b], torch.roll(x[b], (dy, dx), dims=(1, 2)))
    # per batch (released): one offset per image, shared by its copies
    offs = Jitter(32, per_copy=False).sample(3, 4, torch.Generator().manual_seed(5))
    assert offs.shape == (12, 2)
    assert all(torch.equal(offs[i], offs[(i // 4) * 4]) for i in range(12))
    assert offs.abs().max() <= 32
    # the gather path (used on CUDA for large batches) rolls exactly like torch.roll
    y = torch.rand(12, 3, 7, 9)
    many = Jitter(5).sample(12, 1, torch.Generator().manual_seed(2))
    assert torch.equal(Jitter._apply_gather(y, many), Jitter.apply(y, many))
    per_copy = Jitter(32).sample(50, 8, torch.Generator().manual_seed(5))
    assert per_copy.min() >= -32 and per_copy.max() <= 32 and len(set(map(tuple, per_copy.tolist()))) > 100


def test_color_shift_formulas() -> None:
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    mu = torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    sigma = torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1)
    affine = ColorShift(mode="affine").apply(x, (mu, sigma))
    assert torch.allclose(affine.flatten(), torch.tensor([0.1, 0.05, 1.3]))
    std = ColorShift(mode="standardize").apply(x, (mu, sigma))
    assert torch.allclose(std.flatten(), torch.tensor([-0.05, 1.4, 0.7]))
    # sampling: mu ~ U(-1, 1), sigma = exp(U(-1, 1)), mu drawn first, from the given generator
    mu_s, sigma_s = ColorShift().sample(4, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    assert torch.allclose(mu_s, torch.rand(4, 3, 1, 1, generator=g) * 2 - 1)
    assert torch.allclose(sigma_s, (torch.rand(4, 3, 1, 1, generator=g) * 2 - 1).exp())
    big_mu, big_sigma = ColorShift().sample(2000, torch.Generator().manual_seed(1))
    assert -1 <= big_mu.min() < -0.99 and 0.99 < big_mu.max() <= 1
    assert math.exp(-1) <= big_sigma.min() and big_sigma.max() <= math.e


def test_noise_schedules() -> None:
    assert noise_std_at(0, 400) == 0.5
    assert noise_std_at(399, 400) == 0.0
    assert noise_std_at(200, 401) == pytest.approx(0.25)
    # released GaussianNoise(max_iter=400) counter in the 401-step loop
    assert noise_std_at(0, 401, schedule="released") == pytest.approx(0.5 * 398 / 400)
    assert noise_std_at(200, 401, schedule="released") == pytest.approx(0.5 * 198 / 400)
    assert noise_std_at(398, 401, schedule="released") == 0.0
    assert noise_std_at(399, 401, schedule="released") == pytest.approx(0.5 * 399 / 400)


def test_noise_shapes_and_scale() -> None:
    g = torch.Generator().manual_seed(0)
    pixel = GaussianNoise(mode="pixel").sample(8, (3, 16, 16), 0.25, g)
    channel_ = GaussianNoise(mode="channel").sample(8, (3, 16, 16), 0.25, g)
    assert pixel.shape == (8, 3, 16, 16) and channel_.shape == (8, 3, 1, 1)
    assert pixel.std().item() == pytest.approx(0.25, rel=0.05)
    ref = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.25
    assert torch.equal(pixel, ref)


def test_tv_known_tensor() -> None:
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    # channel 0: dx (1, 2) -> sqrt(5); dy (2, 3) -> sqrt(13); diagonals 4 and 1; channel 1 is flat
    two = (math.sqrt(5) + math.sqrt(13)) / 2
    assert tv(x, 2).item() == pytest.approx(two)
    assert tv(x, 4).item() == pytest.approx(two + (4 + 1) / 2)


def test_ensemble_layout_and_streams() -> None:
    rec = get_recipe("paper", n_augment=3, jitter=0, noise_mode="none")
    aug = EnsembleAugment(rec)
    imgs = torch.rand(2, 3, 8, 8)
    streams = [FeatureStreams.create(0, f) for f in (4, 9)]
    out = aug(imgs, streams, 0, 10)
    assert out.shape == (6, 3, 8, 8)
    # copies are consecutive; colour parameters come from each feature's own stream
    g = FeatureStreams.create(0, 9).device
    mu = torch.rand(3, 3, 1, 1, generator=g) * 2 - 1
    sigma = (torch.rand(3, 3, 1, 1, generator=g) * 2 - 1).exp()
    assert torch.allclose(out[3:], imgs[1:2] * sigma + mu)
    assert stream_seeds(0, 3, "feature")[1] == 3
    assert stream_seeds(0, 3) != stream_seeds(0, 4) != stream_seeds(1, 3)


# ---------------------------------------------------------------------------------------------
# objectives
# ---------------------------------------------------------------------------------------------


def _ctx(b: int = 4) -> ObjectiveContext:
    z = torch.zeros(b, 3, 4, 4)
    return ObjectiveContext(activations={}, specs={}, images=z, augmented=z)


def test_objective_arithmetic() -> None:
    a = Objective(lambda ctx: torch.arange(4.0), (), "a")
    b = Objective(lambda ctx: torch.ones(4), ("h",), "b")
    combo = 2 * a - b / 4 + 1.5 - (-a) * 0.5
    assert torch.allclose(combo(_ctx()), 2 * torch.arange(4.0) - 0.25 + 1.5 + 0.5 * torch.arange(4.0))
    assert combo.hooks == ("h",)
    assert torch.allclose(sum([a, a])(_ctx()), 2 * torch.arange(4.0))


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------


def test_feature_grid_png(tmp_path: Path) -> None:
    from vitviz_core.plot import feature_grid, save_grid_png

    imgs = torch.rand(5, 3, 16, 16)
    fig = feature_grid(imgs, [f"#{i}" for i in range(5)], title="t")
    assert len([ax for ax in fig.axes if ax.images]) == 5
    path = save_grid_png(imgs, [f"#{i}" for i in range(5)], tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        feature_grid(imgs, ["x"])


# ---------------------------------------------------------------------------------------------
# objectives on real captured activations (NLC with prefix tokens, NHWC, NCHW)
# ---------------------------------------------------------------------------------------------


def _captured(model: torch.nn.Module, hook: str, x: torch.Tensor) -> ObjectiveContext:
    from vitviz_core.hooks import capture

    with capture(model, [hook], detach=True) as cap:
        cap.forward(x)
    return ObjectiveContext(
        activations=dict(cap.activations),
        specs=dict(cap.specs),
        images=x,
        augmented=x,
        features=torch.tensor([3, 5]),
    )


@pytest.mark.parametrize(
    "family,hook_layout", [("deit", "NLC"), ("dinov2", "NLC"), ("swin", "NHWC"), ("cnn", "NCHW")]
)
def test_channel_objective_matches_manual(family: str, hook_layout: str) -> None:
    from vitviz_core.hooks import list_hooks

    model = tiny(family)
    size = input_size(family)
    specs = [
        s
        for s in list_hooks(model, input_size=size)
        if s.layout == hook_layout and s.channels > 5 and s.grid is not None and "attn" not in s.name
    ]
    spec = specs[len(specs) // 2]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ctx = _captured(model, spec.name, x)
    act = ctx.activations[spec.name]
    if hook_layout == "NLC":
        assert spec.num_prefix_tokens == {"deit": 2, "dinov2": 5}[family]
        manual = torch.stack(
            [act[0, spec.num_prefix_tokens :, 3].mean(), act[1, spec.num_prefix_tokens :, 5].mean()]
        )
        manual_sum = torch.stack(
            [act[0, spec.num_prefix_tokens :, 3].sum(), act[1, spec.num_prefix_tokens :, 5].sum()]
        )
    elif hook_layout == "NHWC":
        manual = torch.stack([act[0, :, :, 3].mean(), act[1, :, :, 5].mean()])
        manual_sum = torch.stack([act[0, :, :, 3].sum(), act[1, :, :, 5].sum()])
    else:
        manual = torch.stack([act[0, 3].mean(), act[1, 5].mean()])
        manual_sum = torch.stack([act[0, 3].sum(), act[1, 5].sum()])
    assert torch.allclose(channel(spec.name)(ctx), manual, atol=1e-6)  # batched: own feature
    assert torch.allclose(channel(spec.name, reduce="sum")(ctx), manual_sum, atol=1e-5)
    assert torch.allclose(channel(spec.name, 3)(ctx)[0], manual[0], atol=1e-6)  # one fixed feature
    maps = ctx.patch_maps(spec.name)  # (B, C, H, W)
    h, w = maps.shape[-2:]
    assert torch.allclose(neuron(spec.name, 5, 0, w - 1)(ctx)[1], maps[1, 5, 0, w - 1])
    from vitviz_core.objectives import direction

    e3 = torch.zeros(maps.shape[1])
    e3[3] = 2.0  # normalised to a unit vector
    assert torch.allclose(direction(spec.name, e3)(ctx)[0], manual[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the optimizer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(TINY))
def test_objective_increases_every_family(family: str) -> None:
    from vitviz_core.optimize import optimize_features, score_images

    model = tiny(family)
    hook = ffn_hook(model)
    size = input_size(family)
    res = optimize_features(
        model,
        hook,
        [0, 1, 2, 3],
        normalize=NORM,
        input_size=size,
        progress=False,
        snapshot_steps=[0],
        steps=20,
        n_augment=8,
        jitter=2,
    )
    before = score_images(model, hook, res.snapshots[0], res.features, normalize=NORM, input_size=size)
    after = score_images(model, hook, res.images, res.features, normalize=NORM, input_size=size)
    assert (after - before).mean() > 0, (hook, before, after)
    assert (after > before).sum() >= 2, (hook, before, after)
    assert res.images.min() >= 0 and res.images.max() <= 1


def _run(model, features, **kw):
    from vitviz_core.optimize import optimize_features

    args = dict(normalize=NORM, progress=False, steps=4, n_augment=3, jitter=4)
    args.update(kw)
    return optimize_features(model, "blocks.1.mlp.hook_post", features, **args)


def test_same_seed_same_image_and_seeds_differ() -> None:
    model = tiny("vit")
    a, b, c = _run(model, [2, 5]), _run(model, [2, 5]), _run(model, [2, 5], seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.allclose(a.images, c.images)
    r1, r2 = _run(model, [2], recipe="released"), _run(model, [2], recipe="released")
    assert torch.equal(r1.images, r2.images)


def test_batched_equals_single() -> None:
    """Counter-based streams: one feature alone == inside a batch == chunked, bit for bit (CPU)."""
    model = tiny("vit")
    for recipe in ("paper", "released"):
        batched = _run(model, [0, 7, 3], recipe=recipe)
        alone = _run(model, [7], recipe=recipe)
        assert torch.equal(batched.images[1], alone.images[0]), recipe
        assert torch.equal(batched.history[:, 1], alone.history[:, 0])
        chunked = _run(model, [0, 7, 3], recipe=recipe, batch_features=2)
        assert torch.equal(batched.images, chunked.images) and chunked.config["chunks"] == 2


def test_counter_streams_depend_only_on_seed_feature_step() -> None:
    """A feature's augmentations at step t are the same inside any batch, in any order, after
    any earlier draws; they differ between steps, features and seeds."""
    from vitviz_core.augment import CounterStreams, counter_seed

    rec = get_recipe("paper", n_augment=3, jitter=3)
    aug = EnsembleAugment(rec)
    imgs = torch.rand(3, 3, 8, 8)
    batch = CounterStreams(0, [4, 9, 2])
    out = aug(imgs, batch, 5, 10)  # (9, 3, 8, 8)
    alone = CounterStreams(0, [9])
    aug(imgs[1:2], alone, 0, 10)  # earlier draws change nothing
    assert torch.equal(aug(imgs[1:2], alone, 5, 10), out[3:6])
    assert torch.equal(aug(imgs[[1, 0]], CounterStreams(0, [9, 4]), 5, 10)[:3], out[3:6])  # any order
    assert not torch.equal(aug(imgs[1:2], alone, 6, 10), out[3:6])
    assert not torch.equal(aug(imgs[1:2], CounterStreams(1, [9]), 5, 10), out[3:6])
    assert counter_seed(7, 3) != counter_seed(7, 4) != counter_seed(8, 3)
    assert counter_seed(7, 3, 0) != counter_seed(7, 3, 1) and 0 <= counter_seed(2**64 - 1, 10**9) < 2**63


def test_auto_chunking_gives_the_images_of_one_chunk(monkeypatch) -> None:
    """batch_features=None sizes chunks from the memory budget; the images do not change."""
    from vitviz_core import optimize as opt_mod

    model = tiny("vit")
    one = _run(model, [5, 1, 8, 2, 6], batch_features=5)
    assert one.config["chunks"] == 1
    seen = {}

    def small_budget(dev):
        seen["dev"] = dev
        return 1.0  # less than one feature: chunks of one

    monkeypatch.setattr(opt_mod, "_memory_budget", small_budget)
    auto = _run(model, [5, 1, 8, 2, 6])
    assert seen["dev"].type == "cpu" and auto.config["chunks"] == 5 and auto.config["batch_features"] == 1
    assert torch.equal(auto.images, one.images) and torch.equal(auto.history, one.history)
    monkeypatch.setattr(opt_mod, "_memory_budget", lambda dev: 1e15)
    assert _run(model, [5, 1, 8], steps=1).config["chunks"] == 1


def test_auto_chunk_arithmetic_and_probe() -> None:
    from vitviz_core.optimize import CPU_MAX_PASSES, auto_chunk

    assert auto_chunk(100, 8, 1e6, 40e6) == 5  # 40 MB / (8 x 1 MB)
    assert auto_chunk(3, 8, 1e6, 40e9) == 3  # never more than K
    assert auto_chunk(100, 8, 1e6, 1.0) == 1  # never less than 1
    assert auto_chunk(1000, 8, 1.0, 1e15, CPU_MAX_PASSES) == CPU_MAX_PASSES // 8
    from vitviz_core.hooks import capture
    from vitviz_core.optimize import _bytes_per_pass, make_normalize

    model = tiny("vit")
    with capture(model, ["blocks.1.mlp.hook_post"], stop_early=True, detach=False) as cap:
        one = _bytes_per_pass(cap, model, make_normalize(*NORM), (32, 32), torch.device("cpu"), torch.float32)
    # 17 tokens x 32 channels x 4 bytes per saved activation: far above one, far below the weights
    assert 17 * 32 * 4 * 4 < one < 5e6


def test_precision_bf16_copy_and_errors() -> None:
    from vitviz_core.optimize import _bf16_model

    model = tiny("vit")
    res = _run(model, [1, 2], precision="bf16", steps=2)
    assert res.config["precision"] == "bf16" and res.config["amp"] == "bf16"
    assert res.images.dtype == torch.float32 and torch.isfinite(res.images).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the user's model is untouched
    low = _bf16_model(model)
    assert low is _bf16_model(model) and next(low.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        model.head.bias.add_(1.0)  # weights changed: a new copy
    assert _bf16_model(model) is not low
    assert _run(model, [1], steps=1).config["precision"] == "fp32"  # CPU default
    with pytest.raises(VitvizError, match="precision"):
        _run(model, [1], precision="fp8")
    with pytest.raises(VitvizError, match="only used on CUDA"):
        _run(model, [1], amp=True)


def test_capture_without_copy_and_cached_normalize() -> None:
    from vitviz_core.hooks import capture
    from vitviz_core.optimize import make_normalize

    model = tiny("vit")
    seen = []
    model.blocks[1].mlp.act.register_forward_hook(lambda mod, args, out: seen.append(out))
    x = torch.rand(2, 3, 32, 32)
    with capture(model, "blocks.1.mlp.hook_post", copy=False) as cap:
        cap.forward(x)
        assert cap.activations["blocks.1.mlp.hook_post"].data_ptr() == seen[-1].data_ptr()  # no clone
    with capture(model, "blocks.1.mlp.hook_post") as cap:
        cap.forward(x)
        assert cap.activations["blocks.1.mlp.hook_post"].data_ptr() != seen[-1].data_ptr()  # default: a copy
        assert torch.equal(cap.activations["blocks.1.mlp.hook_post"], seen[-1])
    model.blocks[1].mlp.act._forward_hooks.clear()
    norm = make_normalize(*NORM)
    y = norm(x)
    assert torch.equal(y, (x - 0.5) / 0.5) and torch.equal(norm(x), y)


def test_truncated_forward_matches_the_hooked_activation() -> None:
    from vitviz_core.hooks import capture
    from vitviz_core.optimize import truncated_forward

    model = tiny("vit")
    hook = "blocks.0.mlp.hook_post"
    trunc = truncated_forward(model, [hook])
    assert not any("blocks.1" in str(n.target) for n in trunc.graph.nodes)  # later blocks are cut
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = trunc(x)[hook]  # (3, 17, 128); outside capture (its hooks would fire inside)
        with capture(model, hook, unfused_attention=False) as cap:  # the same (fused) attention
            cap.forward(x)
    assert torch.equal(out, cap.activations[hook])
    with pytest.raises(VitvizError, match="compile=True"):
        truncated_forward(model, ["blocks.0.attn.hook_v"])  # a slice of qkv: reshaped
    with pytest.raises(VitvizError, match="compile=True"):
        truncated_forward(model, ["blocks.1.hook_resid_pre"])  # a module input


def test_compile_eager_backend_matches_eager() -> None:
    """compile= runs the fx-truncated forward (no exception-based stop) through torch.compile;
    the "eager" backend checks the path in seconds."""
    model = tiny("vit")
    eager = _run(model, [0, 5], steps=3)
    comp = _run(model, [0, 5], steps=3, compile="eager")
    assert comp.config["compile"] == "eager"
    assert torch.allclose(comp.images, eager.images, atol=1e-5)


@pytest.mark.slow
def test_compile_inductor_matches_eager_within_bf16_tolerance() -> None:
    model = tiny("vit")
    eager = _run(model, [0, 5], steps=3)
    comp = _run(model, [0, 5], steps=3, compile=True)
    assert comp.config["compile"] is True
    assert torch.allclose(comp.images, eager.images, atol=2e-2)
    assert torch.allclose(comp.history, eager.history, rtol=2e-2, atol=2e-2)


def test_result_fields_and_config() -> None:
    model = tiny("vit")
    res = _run(model, [1, 4], snapshot_steps=[0, 2, 4], image_size=40)
    assert res.images.shape == (2, 3, 40, 40) and res.images.dtype == torch.float32
    assert res.history.shape == (4, 2) and res.features == [1, 4] and res.labels == ["#1", "#4"]
    assert sorted(res.snapshots) == [0, 2, 4] and torch.equal(res.snapshots[4], res.images)
    assert not torch.equal(res.snapshots[0], res.snapshots[2])
    cfg = res.config
    assert cfg["recipe"]["name"] == "paper" and cfg["recipe"]["n_augment"] == 3 and cfg["steps"] == 4
    assert (
        cfg["hook"] == "blocks.1.mlp.hook_post"
        and cfg["input_size"] == [32, 32]
        and cfg["image_size"] == [40, 40]
    )
    assert cfg["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3} and cfg["amp"] is None


def test_tv_term_and_released_factor_enter_the_objective() -> None:
    model = tiny("vit")
    base = _run(model, [3], steps=1, tv_weight=0.0, snapshot_steps=[0])
    with_tv = _run(model, [3], steps=1, tv_weight=0.01)
    expected = base.history[0, 0] - 0.01 * tv(base.snapshots[0], 2)[0]
    assert with_tv.history[0, 0].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    scaled = _run(model, [3], steps=1, tv_weight=0.0, extra_batch_factor=True)
    assert scaled.history[0, 0].item() == pytest.approx(base.history[0, 0].item() / 3, rel=1e-5, abs=1e-8)


def test_custom_objective_and_diversity() -> None:
    model = tiny("vit")
    hook = "blocks.1.mlp.hook_post"
    obj = channel(hook) - 0.5 * channel(hook, 0) + 0.1 * diversity(hook)
    res = _run(model, [2, 9], objective=obj, images_per_feature=2)
    assert res.images.shape == (4, 3, 32, 32) and res.labels == ["#2.0", "#2.1", "#9.0", "#9.1"]
    assert "diversity" in res.config["objective"]
    # two identical images have diversity -1; different ones more
    x = torch.rand(1, 3, 32, 32).repeat(2, 1, 1, 1)
    ctx = _captured(model, hook, x)
    ctx.images_per_group = 2
    assert torch.allclose(diversity(hook)(ctx), torch.full((2,), -1.0), atol=1e-5)


def test_class_logit_objective() -> None:
    from vitviz_core.optimize import optimize_features, score_images

    model = tiny("vit")
    # plain gradient ascent (no augmentation): checks the NC gather and the full-depth gradient
    res = optimize_features(
        model,
        "hook_logits",
        [3, 7],
        normalize=NORM,
        progress=False,
        steps=10,
        n_augment=1,
        jitter=0,
        color_mode="none",
        noise_mode="none",
        snapshot_steps=[0],
    )
    before = score_images(model, "hook_logits", res.snapshots[0], [3, 7], normalize=NORM)
    after = score_images(model, "hook_logits", res.images, [3, 7], normalize=NORM)
    assert (after > before).all(), (before, after)


def test_no_hooks_left_and_model_state_restored() -> None:
    model = tiny("vit").train()
    _run(model, [0])
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())

    def boom(ctx):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(model, [0], objective=Objective(boom, ("blocks.1.mlp.hook_post",)))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training


def test_bad_arguments_raise_clear_errors() -> None:
    model = tiny("vit")
    with pytest.raises(HookError, match="out of range"):
        _run(model, [128])
    with pytest.raises(HookError):
        from vitviz_core.optimize import optimize_features

        optimize_features(model, "blocks.9.mlp.hook_post", [0], normalize=NORM, progress=False, steps=1)
    with pytest.raises(HookError, match="attention probabilities"):
        from vitviz_core.optimize import optimize_features

        optimize_features(model, "blocks.1.attn.hook_pattern", [0], normalize=NORM, progress=False, steps=1)
    with pytest.raises(VitvizError, match="batch_features"):
        _run(model, [0], batch_features=0)
    with pytest.raises(VitvizError, match="snapshot"):
        _run(model, [0], snapshot_steps=[99])
    with pytest.raises(VitvizError, match="integers"):
        _run(model, [1.5])


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_parse_features() -> None:
    from vitviz_core.render import parse_features

    assert parse_features("0-3") == [0, 1, 2, 3]
    assert parse_features("3,7, 42") == [3, 7, 42]
    assert parse_features("0-2,8,1") == [0, 1, 2, 8]
    for bad in ("", "0-", "a", "3-1", "1,,2", "-1"):
        with pytest.raises(VitvizError):
            parse_features(bad)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["render", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(rc: int, err: str, needle: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]


RANDOM_VIT = ["--model", "vit_tiny_patch16_224", "--weights", "random", "--quiet"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "-3"], "--steps"),
        (["--features", "0-"], "malformed --features"),
        (["--features", "x"], "malformed --features"),
        (["--out", "/nonexistent-dir-vitviz/grid.png"], "does not exist"),
        (["--out", "grid.jpg"], ".png"),
        (["--batch-features", "0"], "--batch-features"),
    ],
)
def test_cli_argument_errors_before_any_work(capsys, monkeypatch, tmp_path: Path, args, needle) -> None:
    import vitviz_core.optimize as opt

    monkeypatch.setattr(opt, "optimize_features", lambda *a, **k: pytest.fail("optimization started"))
    base = ["--model", "no-such-model-xyz", "--out", str(tmp_path / "g.png")]
    rc, _, err = _cli(capsys, *base, *args)
    _assert_one_line_error(rc, err, needle)


def test_cli_unwritable_output(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = _cli(capsys, "--out", str(blocker / "g.png"))
    _assert_one_line_error(rc, err, "does not exist")
    rc, _, err = _cli(capsys, "--out", str(tmp_path))
    _assert_one_line_error(rc, err, ".png")
    (tmp_path / "d.png").mkdir()
    rc, _, err = _cli(capsys, "--out", str(tmp_path / "d.png"))
    _assert_one_line_error(rc, err, "is a directory")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_device_error(capsys, tmp_path: Path) -> None:
    rc, _, err = _cli(capsys, "--device", "cuda", "--out", str(tmp_path / "g.png"))
    _assert_one_line_error(rc, err, "CUDA is not available")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "no-such-model-xyz"], "no-such-model-xyz"),
        ([*RANDOM_VIT, "--hook", "blocks.0.mlp.hook_pst"], "hook_pst"),
        ([*RANDOM_VIT, "--hook", "blocks.99.mlp.hook_post"], "99"),
        ([*RANDOM_VIT, "--hook", "blocks.0.mlp.hook_post", "--features", "760-770"], "out of range"),
    ],
)
def test_cli_model_hook_feature_errors(capsys, monkeypatch, tmp_path: Path, args, needle) -> None:
    import vitviz_core.optimize as opt

    monkeypatch.setattr(opt, "optimize_features", lambda *a, **k: pytest.fail("optimization started"))
    rc, _, err = _cli(capsys, *args, "--out", str(tmp_path / "g.png"))
    _assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "g.png").exists()


def test_cli_render_writes_png(capsys, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    rc, stdout, err = _cli(
        capsys,
        *RANDOM_VIT,
        "--hook",
        "blocks.0.mlp.hook_post",
        "--features",
        "0,5",
        "--steps",
        "2",
        "--batch-features",
        "1",
        "--out",
        str(out),
    )
    assert rc == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in stdout and "2 features" in stdout
    from PIL import Image

    meta = Image.open(out).info
    assert '"hook": "blocks.0.mlp.hook_post"' in meta.get("Description", "")


def test_estimate_seconds_follows_automatic_chunking(monkeypatch) -> None:
    from vitviz_core import optimize as opt_mod

    model = tiny("vit")
    calls = []
    real = opt_mod.optimize_features

    def spy(*args, **kw):
        res = real(*args, **kw)
        calls.append(res.config)
        return res

    monkeypatch.setattr(opt_mod, "optimize_features", spy)
    monkeypatch.setattr(opt_mod, "_memory_budget", lambda dev: 1.0)  # chunks of one feature
    eta = opt_mod.estimate_seconds(
        model, "blocks.1.mlp.hook_post", [1, 2, 3], steps=10, normalize=NORM, n_augment=2
    )
    assert 0 < eta < 3600 and calls[0]["batch_features"] == 1 and calls[0]["steps"] == 1
