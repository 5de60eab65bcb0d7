"""Tests for vitviz_core.hooks: canonical names, layouts, capture, early stop, patch maps.

Every family runs on a tiny randomly initialised timm model (a few thousand parameters),
so the whole file takes seconds on a CPU.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import timm
import torch

from vitviz_core.errors import HookError, VitvizError
from vitviz_core.hooks import (
    HookSpec,
    capture,
    default_input_size,
    list_hooks,
    model_family,
    resolve_hook,
    to_patch_maps,
)

from tiny_models import TINY  # noqa: E402  (the one registry of tiny test models)


@lru_cache(maxsize=None)
def tiny(key: str) -> torch.nn.Module:
    arch, kwargs = TINY[key]
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, **kwargs).eval()


def image(key: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random batch at the tiny model's default input size."""
    H, W = default_input_size(tiny(key))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, H, W, generator=g)  # (B, 3, H, W)


def assert_no_hooks(model: torch.nn.Module) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks, f"forward hook left on {name!r}"
        assert not m._forward_pre_hooks, f"forward pre-hook left on {name!r}"


# family -> {name: (layout, num_prefix_tokens, grid)} that must hold; None = don't check
EXPECTED: dict[str, dict[str, tuple[str, int, tuple[int, int] | None]]] = {
    "vit": {
        "hook_embed": ("NLC", 0, (4, 4)),
        "blocks.1.hook_resid_post": ("NLC", 1, (4, 4)),
        "blocks.0.mlp.hook_post": ("NLC", 1, (4, 4)),
        "blocks.0.attn.hook_q": ("BHLD", 1, (4, 4)),
        "blocks.1.attn.hook_pattern": ("BHLL", 1, (4, 4)),
        "hook_final": ("NLC", 1, (4, 4)),
        "hook_logits": ("NC", 0, None),
    },
    "vit_rect": {"blocks.1.mlp.hook_post": ("NLC", 1, (4, 6)), "blocks.0.attn.hook_v": ("BHLD", 1, (4, 6))},
    "deit_distilled": {
        "blocks.0.hook_resid_pre": ("NLC", 2, (4, 4)),
        "blocks.1.attn.hook_k": ("BHLD", 2, (4, 4)),
    },
    "dinov2_reg": {
        "blocks.0.mlp.hook_post": ("NLC", 5, (4, 4)),
        "blocks.1.hook_attn_out": ("NLC", 5, (4, 4)),
    },
    "clip": {"blocks.0.hook_resid_pre": ("NLC", 1, (4, 4)), "blocks.1.mlp.hook_post": ("NLC", 1, (4, 4))},
    "convit": {
        "blocks.0.hook_resid_pre": ("NLC", 0, (4, 4)),
        "blocks.1.mlp.hook_post": ("NLC", 0, (4, 4)),  # GPSA blocks: no CLS token yet
        "blocks.1.attn.hook_pattern": ("BHLL", 0, (4, 4)),
        "blocks.2.hook_resid_pre": ("NLC", 1, (4, 4)),  # CLS joins at local_up_to_layer = 2
        "blocks.2.mlp.hook_post": ("NLC", 1, (4, 4)),
        "blocks.2.attn.hook_q": ("BHLD", 1, (4, 4)),
        "hook_final": ("NLC", 1, (4, 4)),
    },
    "pit": {
        "hook_embed": ("NCHW", 0, (11, 11)),
        "stages.0.blocks.0.mlp.hook_post": ("NLC", 1, (11, 11)),
        "stages.1.blocks.0.attn.hook_q": ("BHLD", 1, (6, 6)),
        "stages.2.blocks.0.hook_resid_post": ("NLC", 1, (3, 3)),
        "stages.1": ("NCHW", 0, (6, 6)),
    },
    "pit_distilled": {
        "stages.2.blocks.0.mlp.hook_post": ("NLC", 2, (3, 3)),
        "stages.0.blocks.0.attn.hook_pattern": ("BHLL", 2, (11, 11)),
    },
    "swin": {
        "hook_embed": ("NHWC", 0, (8, 8)),
        "stages.0.blocks.1.hook_resid_pre": ("NHWC", 0, (8, 8)),
        "stages.0.blocks.1.hook_resid_mid": ("NLC", 0, (8, 8)),
        "stages.0.blocks.1.mlp.hook_post": ("NLC", 0, (8, 8)),
        "stages.0.blocks.1.attn.hook_q": ("BHLD", 0, (8, 8)),
        "stages.1.blocks.0.attn.hook_z": ("NLC", 0, (4, 4)),
        "stages.1.blocks.1.hook_resid_post": ("NHWC", 0, (4, 4)),
        "stages.1": ("NHWC", 0, (4, 4)),
        "hook_final": ("NHWC", 0, (4, 4)),
    },
    "coat": {
        "hook_embed": ("NLC", 0, (8, 8)),
        "stages.0.blocks.0.mlp.hook_post": ("NLC", 1, (8, 8)),
        "stages.1.blocks.0.attn.hook_v": ("BHLD", 1, (4, 4)),
        "stages.2": ("NLC", 1, (2, 2)),
        "hook_final": ("NLC", 1, (1, 1)),
    },
    "twins_pcpvt": {
        "stages.0.blocks.0.mlp.hook_post": ("NLC", 0, (8, 8)),
        "stages.0.blocks.0.attn.hook_q": ("BHLD", 0, (8, 8)),
        "stages.0.blocks.0.attn.hook_k": ("BHLD", 0, (2, 2)),  # keys on the sr_ratio=4 sub-sampled grid
        "stages.1.blocks.0.attn.hook_v": ("BHLD", 0, (2, 2)),
        "stages.3": ("NLC", 0, (1, 1)),
    },
    "twins_svt": {
        "stages.0.blocks.0.mlp.hook_post": ("NLC", 0, (16, 16)),
        "stages.0.blocks.0.attn.hook_z": ("NLC", 0, (16, 16)),  # locally grouped attention
        "stages.0.blocks.1.attn.hook_q": ("BHLD", 0, (16, 16)),  # global sub-sampled attention
        "stages.1": ("NLC", 0, (8, 8)),
    },
    "efficientnet": {
        "hook_embed": ("NCHW", 0, (32, 32)),
        "stages.0.blocks.0": ("NCHW", 0, (32, 32)),
        "stages.6": ("NCHW", 0, (2, 2)),
        "hook_final": ("NCHW", 0, (2, 2)),
    },
    "resnet": {
        "hook_embed": ("NCHW", 0, (16, 16)),
        "stages.0.blocks.0": ("NCHW", 0, (16, 16)),
        "stages.3": ("NCHW", 0, (2, 2)),
    },
}

# families that expose q/k/v (and, where listed, the attention pattern) on their first block
QKV = {
    "vit": "blocks.0",
    "deit_distilled": "blocks.0",
    "dinov2_reg": "blocks.0",
    "clip": "blocks.0",
    "convit": "blocks.0",
    "pit": "stages.0.blocks.0",
    "swin": "stages.0.blocks.0",
    "coat": "stages.0.blocks.0",
    "twins_pcpvt": "stages.0.blocks.0",
}
PATTERN = {"vit", "deit_distilled", "dinov2_reg", "clip", "convit", "pit", "twins_pcpvt"}


@pytest.mark.parametrize("key", sorted(TINY))
def test_every_canonical_name_resolves_and_captures(key: str) -> None:
    model = tiny(key)
    specs = list_hooks(model)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for name, (layout, prefix, grid) in EXPECTED.get(key, {}).items():
        spec = resolve_hook(model, name)
        assert (spec.layout, spec.num_prefix_tokens, spec.grid) == (layout, prefix, grid), name
    # q/k/v where the attention module has them, FFN and residual names for every transformer
    if key in QKV:
        b = QKV[key]
        for n in (
            "attn.hook_q",
            "attn.hook_k",
            "attn.hook_v",
            "mlp.hook_pre",
            "mlp.hook_post",
            "mlp.hook_out",
            "hook_resid_pre",
            "hook_resid_post",
        ):
            assert f"{b}.{n}" in names, f"{b}.{n}"
        assert (f"{b}.attn.hook_pattern" in names) == (key in PATTERN)

    x = image(key)
    with capture(model, names, stop_early=False) as cap:
        out = cap.forward(x)
    assert out is not None
    assert_no_hooks(model)
    for spec in specs:
        act = cap.activations[spec.name]
        assert act.shape[0] == 2 and tuple(act.shape[1:]) == spec.shape, spec.name
        assert not act.requires_grad
        if spec.layout == "BHLL" and spec.hook_type != "mask":  # masks: (B, 1, L, L) bool
            assert torch.allclose(act.sum(-1), torch.ones(()), atol=1e-5), spec.name  # softmax rows
        if spec.layout in ("BHLL", "NC"):
            continue
        maps = to_patch_maps(act, spec)
        assert maps.shape == (2, spec.channels, *spec.grid), spec.name


def test_hierarchical_and_cnn_names_follow_stage_block_scheme() -> None:
    swin = {s.name: s for s in list_hooks(tiny("swin"))}
    assert swin["stages.1.blocks.0.mlp.hook_post"].module_path == "layers.1.blocks.0.mlp.act"
    twins = {s.name: s for s in list_hooks(tiny("twins_svt"))}
    assert twins["stages.2.blocks.1.mlp.hook_pre"].module_path == "blocks.2.1.mlp.fc1"
    coat = {s.name: s for s in list_hooks(tiny("coat"))}
    assert coat["stages.3.blocks.0.attn.hook_q"].module_path == "serial_blocks4.0.factoratt_crpe.qkv"
    pit = {s.name: s for s in list_hooks(tiny("pit"))}
    assert pit["stages.2"].module_path == "transformers.2"
    eff = {s.name: s for s in list_hooks(tiny("efficientnet"))}
    assert eff["stages.1.blocks.1"].module_path == "blocks.1.1" and eff["stages.1"].module_path == "blocks.1"
    res = {s.name: s for s in list_hooks(tiny("resnet"))}
    assert res["stages.2.blocks.0"].module_path == "layer3.0" and res["stages.3"].module_path == "layer4"
    vit = {s.name: s for s in list_hooks(tiny("vit"))}
    assert vit["blocks.1.mlp.hook_post"].module_path == "blocks.1.mlp.act"
    assert [
        model_family(tiny(k)) for k in ("vit", "convit", "pit", "swin", "twins_svt", "coat", "resnet")
    ] == ["vit", "convit", "pit", "swin", "twins", "coat", "resnet"]


def test_depth_follows_forward_order() -> None:
    specs = list_hooks(tiny("vit"))
    depth = {s.name: s.depth for s in specs}
    assert [s.depth for s in specs] == sorted(s.depth for s in specs)
    assert (
        depth["hook_embed"]
        < depth["blocks.0.hook_resid_pre"]
        < depth["blocks.0.attn.hook_q"]
        < depth["blocks.0.mlp.hook_pre"]
        < depth["blocks.0.mlp.hook_post"]
        < depth["blocks.0.hook_resid_post"]
        < depth["blocks.1.hook_resid_pre"]
        < depth["hook_final"]
        < depth["hook_logits"]
    )


def test_vit_qkv_pattern_z_result_are_consistent() -> None:
    model = tiny("vit")
    x = image("vit")
    b = "blocks.1.attn"
    names = [f"{b}.hook_{n}" for n in ("q", "k", "v", "pattern", "z", "result")] + [f"{b}.qkv"]
    with capture(model, names) as cap:
        assert cap.forward(x) is None  # stopped after attn.proj
    a = cap.activations
    q, k, v = a[f"{b}.hook_q"], a[f"{b}.hook_k"], a[f"{b}.hook_v"]
    assert q.shape == k.shape == v.shape == (2, 2, 17, 16)  # (B, heads, 1 + 4*4, d)
    pattern = torch.softmax(q @ k.transpose(-2, -1) * 16**-0.5, dim=-1)
    assert torch.allclose(pattern, a[f"{b}.hook_pattern"], atol=1e-6)
    z = (pattern @ v).transpose(1, 2).reshape(2, 17, 32)
    assert torch.allclose(z, a[f"{b}.hook_z"], atol=1e-5)
    proj = model.blocks[1].attn.proj
    assert torch.allclose(proj(a[f"{b}.hook_z"]), a[f"{b}.hook_result"], atol=1e-6)
    # v is the third chunk of the fused qkv Linear; q (identity q_norm) the first
    raw = a[f"{b}.qkv"].reshape(2, 17, 3, 2, 16)
    assert torch.equal(raw[:, :, 2].transpose(1, 2), v) and torch.equal(raw[:, :, 0].transpose(1, 2), q)


def test_qkv_maps_merge_heads_into_channels() -> None:
    model = tiny("vit")
    with capture(model, ["blocks.0.attn.hook_k"]) as cap:
        cap.forward(image("vit"))
    k, spec = cap.activations["blocks.0.attn.hook_k"], cap.specs["blocks.0.attn.hook_k"]
    maps = to_patch_maps(k, spec)
    assert maps.shape == (2, 32, 4, 4) and spec.channels == 32
    # channel = head * head_dim + j; token order is row-major after the CLS token
    assert torch.equal(maps[:, 1 * 16 + 3], k[:, 1, 1:, 3].reshape(2, 4, 4))


def test_convit_gpsa_and_mhsa_attention() -> None:
    model = tiny("convit")
    x = image("convit")
    names = [
        "blocks.1.attn.hook_pattern",
        "blocks.1.attn.hook_v",
        "blocks.1.attn.hook_z",
        "blocks.2.attn.hook_q",
        "blocks.2.attn.hook_k",
        "blocks.2.attn.hook_pattern",
    ]
    with capture(model, names) as cap:
        cap.forward(x)
    a = cap.activations
    # GPSA (before the CLS token joins): z = gated pattern @ v over 16 patches
    z = (a["blocks.1.attn.hook_pattern"] @ a["blocks.1.attn.hook_v"]).transpose(1, 2).reshape(2, 16, 32)
    assert torch.allclose(z, a["blocks.1.attn.hook_z"], atol=1e-5)
    # MHSA (after): plain softmax of q.k over CLS + 16 patches
    q, k = a["blocks.2.attn.hook_q"], a["blocks.2.attn.hook_k"]
    assert q.shape == (2, 2, 17, 16)  # ConViT's embed_dim is per head: 16 * 2 heads
    assert torch.allclose(
        torch.softmax(q @ k.transpose(-2, -1) * 16**-0.5, -1), a["blocks.2.attn.hook_pattern"], atol=1e-6
    )
    maps = to_patch_maps(a["blocks.1.attn.hook_v"], cap.specs["blocks.1.attn.hook_v"])  # no prefix to drop
    assert torch.equal(maps[:, 0], a["blocks.1.attn.hook_v"][:, 0, :, 0].reshape(2, 4, 4))


def test_prefix_tokens_are_dropped_in_patch_maps() -> None:
    model = tiny("deit_distilled")
    name = "blocks.1.hook_resid_post"
    with capture(model, [name]) as cap:
        cap.forward(image("deit_distilled"))
    act = cap.activations[name]  # (B, 2 + 16, C)
    maps = to_patch_maps(act, cap.specs[name])
    assert torch.equal(maps.flatten(2).transpose(1, 2), act[:, 2:])


def test_dinov2_layerscale_and_registers() -> None:
    model = tiny("dinov2_reg")
    b = "blocks.0"
    with capture(
        model, [f"{b}.attn.hook_result", f"{b}.hook_attn_out", f"{b}.hook_resid_pre", f"{b}.hook_resid_mid"]
    ) as cap:
        cap.forward(image("dinov2_reg"))
    a = cap.activations
    gamma = model.blocks[0].ls1.gamma
    assert torch.allclose(a[f"{b}.hook_attn_out"], a[f"{b}.attn.hook_result"] * gamma, atol=1e-7)
    assert torch.allclose(
        a[f"{b}.hook_resid_pre"] + a[f"{b}.hook_attn_out"], a[f"{b}.hook_resid_mid"], atol=1e-6
    )
    assert a[f"{b}.hook_resid_pre"].shape[1] == 1 + 4 + 16  # CLS + 4 registers + patches


def test_clip_norm_pre_feeds_first_block() -> None:
    model = tiny("clip")
    assert not isinstance(model.norm_pre, torch.nn.Identity)
    with capture(model, ["norm_pre", "blocks.0.hook_resid_pre"]) as cap:
        cap.forward(image("clip"))
    assert torch.equal(cap.activations["norm_pre"], cap.activations["blocks.0.hook_resid_pre"])
    assert cap.specs["norm_pre"].num_prefix_tokens == 1


def test_swin_qkv_are_unwindowed_into_image_order() -> None:
    model = tiny("swin")
    b = "stages.0.blocks.1"  # shifted-window block (shift 2 on the 8x8 grid)
    blk = model.layers[0].blocks[1]
    assert any(blk.shift_size)
    names = [
        f"{b}.hook_resid_pre",
        f"{b}.attn.hook_q",
        f"{b}.attn.hook_v",
        f"{b}.hook_attn_out",
        f"{b}.hook_resid_mid",
        f"{b}.attn.hook_z",
        f"{b}.attn.hook_result",
    ]
    with capture(model, names) as cap:
        cap.forward(image("swin"))
    a = cap.activations
    x = a[f"{b}.hook_resid_pre"]  # (B, 8, 8, C)
    qkv = blk.attn.qkv(blk.norm1(x)).reshape(2, 64, 3, 1, 16)  # per-token Linear, image order
    assert torch.allclose(a[f"{b}.attn.hook_q"], qkv[:, :, 0].transpose(1, 2), atol=1e-6)
    assert torch.allclose(a[f"{b}.attn.hook_v"], qkv[:, :, 2].transpose(1, 2), atol=1e-6)
    assert torch.allclose(x.reshape(2, 64, 16) + a[f"{b}.hook_attn_out"], a[f"{b}.hook_resid_mid"], atol=1e-6)
    assert torch.allclose(blk.attn.proj(a[f"{b}.attn.hook_z"]), a[f"{b}.attn.hook_result"], atol=1e-6)
    q_maps = to_patch_maps(a[f"{b}.attn.hook_q"], cap.specs[f"{b}.attn.hook_q"])
    assert q_maps.shape == (2, 16, 8, 8)


def test_twins_gsa_keys_live_on_subsampled_grid() -> None:
    model = tiny("twins_pcpvt")
    b = "stages.0.blocks.0.attn"
    with capture(
        model, [f"{b}.hook_q", f"{b}.hook_k", f"{b}.hook_v", f"{b}.hook_pattern", f"{b}.hook_z"]
    ) as cap:
        cap.forward(image("twins_pcpvt"))
    a = cap.activations
    q, k, v = a[f"{b}.hook_q"], a[f"{b}.hook_k"], a[f"{b}.hook_v"]
    assert q.shape == (2, 1, 64, 8) and k.shape == v.shape == (2, 1, 4, 8)
    pattern = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5, -1)
    assert torch.allclose(pattern, a[f"{b}.hook_pattern"], atol=1e-6)
    assert to_patch_maps(k, cap.specs[f"{b}.hook_k"]).shape == (2, 8, 2, 2)


def test_raw_module_paths_work_and_infer_layouts() -> None:
    vit = tiny("vit")
    with capture(vit, ["blocks.1.mlp.act", "blocks.1.mlp.hook_post", "pos_drop"]) as cap:
        cap.forward(image("vit"))
    assert torch.equal(cap.activations["blocks.1.mlp.act"], cap.activations["blocks.1.mlp.hook_post"])
    assert (cap.specs["pos_drop"].layout, cap.specs["pos_drop"].num_prefix_tokens) == ("NLC", 1)
    assert resolve_hook(vit, "blocks.0.attn.attn_drop").layout == "BHLL"
    assert resolve_hook(vit, "blocks.0.attn.q_norm").layout == "BHLD"
    convit = tiny("convit")
    assert resolve_hook(convit, "blocks.1.mlp.fc2").num_prefix_tokens == 0
    assert resolve_hook(convit, "blocks.2.mlp.fc2").num_prefix_tokens == 1
    swin = resolve_hook(tiny("swin"), "layers.0.blocks.0")
    assert (swin.layout, swin.grid, swin.channels) == ("NHWC", (8, 8), 16)
    pit_stage = resolve_hook(tiny("pit"), "transformers.1")  # returns (x, cls_tokens): x is used
    assert (pit_stage.layout, pit_stage.grid) == ("NCHW", (6, 6))
    raw = {s.name for s in list_hooks(vit, include_raw=True)}
    assert {"blocks.0.attn.qkv", "blocks.0.norm1", "head", "blocks.0.mlp.hook_post"} <= raw


def test_early_stop_matches_full_forward_and_skips_the_rest() -> None:
    model = tiny("vit")
    x = image("vit")
    names = ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_pattern"]
    with capture(model, names, stop_early=False) as full:
        logits = full.forward(x)
    assert logits.shape == (2, 10)
    calls = []
    handle = model.blocks[1].register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with capture(model, names, stop_early=True) as early:
            assert early.forward(x) is None
    finally:
        handle.remove()
    assert calls == []  # block 1 never ran
    for n in names:
        assert torch.equal(full.activations[n], early.activations[n])
    # a pre-hook name stops before its module runs
    with capture(model, ["blocks.1.hook_resid_pre"]) as cap:
        assert cap.forward(x) is None
    # never stops on the model output itself (unfused, as the pattern capture above ran)
    with capture(model, ["hook_logits"], unfused_attention=True) as cap:
        assert torch.equal(cap.forward(x), logits)
    assert_no_hooks(model)


def test_hooks_removed_and_fused_attn_restored_after_exceptions() -> None:
    model = tiny("vit")
    attn = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert attn
    for m in attn:
        m.fused_attn = True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with capture(model, ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern"]) as cap:
                assert all(m.fused_attn is False for m in attn)  # decided from the hooks
                assert any(m._forward_hooks for m in model.modules())
                raise RuntimeError("boom")
        assert_no_hooks(model)
        assert all(m.fused_attn is True for m in attn)
        # an error inside the model's forward (wrong input size for a fixed-size ViT)
        with pytest.raises(Exception) as err:
            with capture(model, ["blocks.1.mlp.hook_post"]) as cap:
                cap.forward(torch.zeros(1, 3, 40, 40))
        assert not isinstance(err.value, HookError)
        assert_no_hooks(model)
        assert all(m.fused_attn is True for m in attn)
        # forward() outside a with block opens and closes one for the call
        cap = capture(model, ["blocks.0.mlp.hook_post"])
        cap.forward(image("vit"))
        assert cap.activations["blocks.0.mlp.hook_post"].shape == (2, 17, 128)
        assert_no_hooks(model)
        # keeping fused attention: the pattern hook cannot fire, and that is a clear error
        with pytest.raises(HookError, match="unfused attention"):
            with capture(model, ["blocks.0.attn.hook_pattern"], unfused_attention=False) as cap:
                assert all(m.fused_attn is True for m in attn)
                cap.forward(image("vit"))
        assert_no_hooks(model)
    finally:
        for m in attn:
            m.fused_attn = True


def test_gradients_flow_with_detach_false() -> None:
    model = tiny("swin")
    x = image("swin").requires_grad_(True)
    with capture(
        model, ["stages.0.blocks.1.mlp.hook_post", "stages.0.blocks.1.attn.hook_q"], detach=False
    ) as cap:
        cap.forward(x)
    act = cap.activations["stages.0.blocks.1.mlp.hook_post"]
    assert act.requires_grad
    (act[..., 3].mean() + cap.activations["stages.0.blocks.1.attn.hook_q"].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with capture(model, ["stages.0.blocks.1.mlp.hook_post"]) as cap:  # detach=True (default)
        cap.forward(x)
    assert not cap.activations["stages.0.blocks.1.mlp.hook_post"].requires_grad


def test_same_module_several_names_and_repeated_forwards() -> None:
    model = tiny("vit")
    names = [
        "blocks.0",
        "blocks.0.hook_resid_post",
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_z",
        "blocks.0.attn.hook_result",
        "blocks.0.attn.hook_v",
        "blocks.0.attn.qkv",
    ]
    with capture(model, names) as cap:
        cap.forward(image("vit", seed=1))
        first = dict(cap.activations)
        cap.forward(image("vit", seed=2))
    assert torch.equal(cap.activations["blocks.0"], cap.activations["blocks.0.hook_resid_post"])
    assert not torch.equal(first["blocks.0"], cap.activations["blocks.0"])
    assert set(cap.activations) == set(names)
    assert_no_hooks(model)


def test_unknown_and_out_of_range_names_raise_hook_error() -> None:
    model = tiny("vit")
    with pytest.raises(HookError) as err:
        resolve_hook(model, "blocks.0.mlp.hook_pots")
    assert isinstance(err.value, KeyError) and isinstance(err.value, VitvizError)
    assert "blocks.0.mlp.hook_post" in str(err.value)
    with pytest.raises(HookError, match=r"blocks index 7 is out of range.*0\.\.1"):
        resolve_hook(model, "blocks.7.mlp.hook_post")
    with pytest.raises(HookError, match=r"0\.\.1"):
        capture(model, ["blocks.0.mlp.hook_post", "blocks.2.attn.hook_q"])
    pit = tiny("pit")
    with pytest.raises(HookError, match=r"stages\.1 has blocks 0\.\.0"):
        resolve_hook(pit, "stages.1.blocks.3.mlp.hook_post")
    with pytest.raises(HookError, match=r"stages 0\.\.2"):
        resolve_hook(pit, "stages.5")
    with pytest.raises(HookError, match="closest"):
        resolve_hook(tiny("swin"), "stages.0.blocks.0.attn.hook_pattern")  # windowed: not offered
    with pytest.raises(HookError):
        capture(model, [])


def test_to_patch_maps_errors_and_grid_override() -> None:
    model = tiny("vit")
    spec = resolve_hook(model, "blocks.0.mlp.hook_post")
    act = torch.randn(2, 17, 128)
    assert to_patch_maps(act, spec, grid=(2, 8)).shape == (2, 128, 2, 8)
    with pytest.raises(HookError, match="do not fill the grid"):
        to_patch_maps(torch.randn(2, 26, 128), spec)  # 25 patches vs the 4x4 grid
    with pytest.raises(HookError, match="no patch maps"):
        to_patch_maps(torch.randn(2, 10), resolve_hook(model, "hook_logits"))
    with pytest.raises(HookError, match="no patch maps"):
        to_patch_maps(torch.randn(2, 2, 17, 17), resolve_hook(model, "blocks.0.attn.hook_pattern"))
    nchw = HookSpec("x", "x", "NCHW", 0, 3, (2, 2), 0)
    t = torch.randn(1, 3, 2, 2)
    assert to_patch_maps(t, nchw) is t
    nhwc = HookSpec("x", "x", "NHWC", 0, 3, (2, 2), 0)
    assert torch.equal(to_patch_maps(t.permute(0, 2, 3, 1), nhwc), t)


def test_specs_follow_the_input_size_of_the_forward_pass() -> None:
    model = tiny("resnet")
    assert resolve_hook(model, "stages.3").grid == (2, 2)  # default 64 px
    with capture(model, ["stages.3", "stages.0.blocks.0"]) as cap:
        cap.forward(torch.randn(1, 3, 128, 96))
    assert cap.specs["stages.3"].grid == (4, 3)
    assert to_patch_maps(cap.activations["stages.0.blocks.0"], cap.specs["stages.0.blocks.0"]).shape == (
        1,
        64,
        32,
        24,
    )
    assert resolve_hook(model, "stages.3", input_size=(128, 128)).grid == (4, 4)
    assert math.prod(resolve_hook(model, "stages.3").grid) == 4  # default cache untouched


def test_probe_leaves_model_state_alone() -> None:
    arch, kwargs = TINY["swin"]
    model = timm.create_model(arch, pretrained=False, **kwargs).train()
    fused = {n: m.fused_attn for n, m in model.named_modules() if hasattr(m, "fused_attn")}
    list_hooks(model, include_raw=True)
    assert model.training and all(m.training for m in model.modules())
    assert fused == {n: m.fused_attn for n, m in model.named_modules() if hasattr(m, "fused_attn")}
    assert_no_hooks(model)
    with capture(model, ["stages.0.blocks.0.mlp.hook_post"]) as cap:
        cap.forward(torch.zeros(2, 3, 32, 32))
    assert cap.activations["stages.0.blocks.0.mlp.hook_post"].shape == (2, 64, 64)
    assert model.training
    assert_no_hooks(model)


# ---------------------------------------------------------------------------- batch dim (issue 12 item 6)


def test_mobilevit_folded_batch_is_an_unknown_layout_not_a_mislabel() -> None:
    """MobileViT's transformer sees (B * patch_area, N, C): the batch is folded into dim 0."""
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", pretrained=False, img_size=64).eval()
    folded = "stages.2.1.transformer.0.mlp.fc1"
    with pytest.raises(HookError, match=rf"{folded}.*unknown layout.*dim 0 is not the batch"):
        resolve_hook(model, folded)
    with pytest.raises(HookError, match="unknown layout"):
        capture(model, [folded])
    assert all("transformer" not in s.name for s in list_hooks(model, include_raw=True))
    # the block around it has a batch dim and a known layout (NCHW): it works
    spec = resolve_hook(model, "stages.2.1")
    assert spec.layout == "NCHW" and spec.grid == tuple(s // 8 for s in default_input_size(model))
    with capture(model, ["stages.2.1"]) as cap:
        cap.forward(torch.rand(3, 3, 64, 64))
    assert cap.activations["stages.2.1"].shape[0] == 3


def test_mobilevit_objective_fails_clearly_not_raw() -> None:
    from vitviz_core.optimize import optimize_features

    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", pretrained=False, img_size=64).eval()
    with pytest.raises(HookError, match="unknown layout"):
        optimize_features(
            model, "stages.2.1.transformer.0.mlp.fc1", [0], steps=2, input_size=64, progress=False
        )


class _FixedFold(torch.nn.Module):
    """Folds any batch into a fixed leading dim of 2: looks like (B, ...) only when B == 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1, x.shape[-1])


def test_batch_dim_is_checked_at_capture_time() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), _FixedFold(), torch.nn.Identity()).eval()
    assert resolve_hook(model, "1", input_size=8).layout == "NLC"  # the batch-2 probe cannot tell
    with capture(model, ["1"]) as cap:
        with pytest.raises(HookError, match=r"'1'.*first dim 2 for a batch of 3 images"):
            cap.forward(torch.rand(3, 3, 8, 8))
        cap.forward(torch.rand(2, 3, 8, 8))  # a batch of 2 still works
    assert_no_hooks(model)


# --------------------------------------------------------------------------------------------
# interventions: capture(..., edit=) and the attention-mask hook
# --------------------------------------------------------------------------------------------


def test_identity_edits_leave_the_forward_pass_bit_for_bit() -> None:
    model, x = tiny("vit"), image("vit")
    with torch.no_grad():
        ref = model(x)
        edits = {
            "blocks.0.hook_resid_pre": lambda t, s: t,
            "blocks.1.mlp.hook_post": lambda t, s: None,
            "blocks.1.attn.hook_mask": lambda m, s: m,
        }
        with capture(model, [], edit=edits) as cap:
            out = cap.forward(x)
    assert torch.equal(out, ref)
    assert_no_hooks(model)


def test_edits_change_outputs_and_captures_see_edited_values() -> None:
    model, x = tiny("vit"), image("vit")
    with torch.no_grad():
        ref = model(x)
        zero = {"blocks.1.mlp.hook_post": lambda t, s: torch.zeros_like(t)}
        with capture(model, ["blocks.1.mlp.hook_post"], stop_early=False, edit=zero) as cap:
            out = cap.forward(x)
    assert not torch.allclose(out, ref)
    assert cap.activations["blocks.1.mlp.hook_post"].abs().max() == 0
    with pytest.raises(HookError, match="cannot be edited"):  # v is split out of qkv
        capture(model, [], edit={"blocks.0.attn.hook_v": lambda t, s: t})
    assert_no_hooks(model)


def test_hook_mask_cuts_attention_edges() -> None:
    model, x = tiny("vit"), image("vit")

    def cls_blind(mask: torch.Tensor, spec: HookSpec) -> torch.Tensor:  # (B, 1, L, L) bool
        assert mask.dtype == torch.bool and mask.all() and mask.shape[1] == 1
        mask = mask.clone()
        mask[:, :, 0, 1:] = False
        return mask

    with capture(
        model,
        ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_mask"],
        edit={"blocks.0.attn.hook_mask": cls_blind},
    ) as cap:
        cap.forward(x)
    pattern = cap.activations["blocks.0.attn.hook_pattern"]  # (B, heads, L, L)
    assert torch.allclose(pattern[:, :, 0, 0], torch.ones(()))  # CLS attends only to itself
    assert (pattern[:, :, 1:, 0] > 0).all()  # patches still see CLS
    assert not cap.activations["blocks.0.attn.hook_mask"][:, :, 0, 1:].any()


def test_unfused_attention_is_decided_from_the_hooks() -> None:
    model = tiny("vit")
    attn = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in attn:
        m.fused_attn = True
    try:
        with capture(model, ["blocks.0.mlp.hook_post", "blocks.0.attn.hook_q"]) as cap:
            assert cap.unfused_attention is False and all(m.fused_attn for m in attn)
        with capture(model, ["blocks.0.attn.hook_pattern"]) as cap:
            assert cap.unfused_attention is True and not any(m.fused_attn for m in attn)
        assert all(m.fused_attn for m in attn)
    finally:
        for m in attn:
            m.fused_attn = timm.layers.use_fused_attn()


def test_captured_blocks_match_timm_forward_intermediates() -> None:
    model, x = tiny("vit"), image("vit")
    names = [f"blocks.{i}" for i in range(len(model.blocks))]
    with torch.no_grad():
        with capture(model, names) as cap:
            cap.forward(x)
        _, inter = model.forward_intermediates(x, norm=False, output_fmt="NLC", return_prefix_tokens=True)
    for n, (patches, prefix) in zip(names, inter):
        act = cap.activations[n]  # (B, L, C)
        npre = cap.specs[n].num_prefix_tokens
        assert torch.allclose(act[:, npre:], patches, atol=1e-6)
        assert torch.allclose(act[:, :npre], prefix, atol=1e-6)


def test_capture_accepts_a_loaded_model() -> None:
    from vitviz_core.models import as_loaded

    model, x = tiny("vit"), image("vit")
    with capture(as_loaded(model), ["blocks.0"]) as cap:
        cap.forward(x)
    assert cap.model is model


# --------------------------------------------------------------------------------------------
# stage names from timm's feature_info
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,kwargs,family",
    [  # LeViT / EfficientFormer: attention biases fix 224 px
        ("levit_128s", dict(num_classes=10), "levit"),
        ("efficientformer_l1", dict(num_classes=10), "efficientformer"),
        (
            "mobilevit_xxs",
            dict(num_classes=10, pretrained_cfg_overlay=dict(input_size=(3, 64, 64))),
            "mobilevit",
        ),
    ],
)
def test_stage_names_come_from_feature_info(arch: str, kwargs: dict, family: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    assert model_family(model) == family
    stages = [e["module"] for e in model.feature_info if e["module"].startswith("stages.")]
    specs = {s.name: s for s in list_hooks(model)}
    for entry in model.feature_info:
        if entry["module"] in stages:
            spec = specs[entry["module"]]
            assert spec.channels == entry["num_chs"] and spec.grid is not None
    name = next(n for n in specs if ".blocks." in n)
    with capture(model, [name, stages[-1]]) as cap:
        cap.forward(torch.zeros(2, 3, *default_input_size(model)))
    maps = to_patch_maps(cap.activations[stages[-1]], cap.specs[stages[-1]])
    assert maps.shape[1] == specs[stages[-1]].channels


def test_a_layout_that_cannot_be_proven_is_a_hook_error() -> None:
    from vitviz_core.hook_names import Target
    from vitviz_core.hooks import _proven_layout

    ambiguous = Target("stages.0", "stages.0", channels=8)
    with pytest.raises(HookError, match="safely"):
        _proven_layout(ambiguous, (2, 8, 8, 8), (64, 64))  # NCHW and NHWC both fit
    with pytest.raises(HookError, match="safely"):
        _proven_layout(ambiguous, (2, 5, 16, 16), (64, 64))  # no dim holds 8 channels
    assert _proven_layout(ambiguous, (2, 8, 4, 4), (64, 64)) == ("NCHW", 0, 8, (4, 4))
