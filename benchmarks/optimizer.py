"""Benchmark: the feature-visualization optimizer's step vs the bare model work it contains.

**CPU: ``step_overhead_ratio``** = seconds per ``optimize_features`` step ÷ seconds per bare
step, measured side by side in one run (arms interleaved, median of ``--repeats``):

- optimizer step: ``optimize_features(model, hook, range(K), n_augment=n)`` (image
  parametrization, augmentations, forward stopped at the hook, objective + TV, input-gradient
  backward, Adam, clamp). Setup (hook probe, allocation) is taken out by timing runs of
  ``1`` and ``1 + steps`` steps and dividing the difference by ``steps``;
- bare step: the same model on the same batch shape ``(K * n, 3, H, W)``: a forward truncated
  at the same op (patch embed, ``blocks[:L]``, then block L up to ``mlp.act``) and the backward
  of the hooked channel's mean to the input, nothing else.

The ratio is the cost of everything that is not the model (goal <= 1.10).

**CUDA** (skipped without it): ViT-B/16 at 224 px (random init: speed does not depend on the
weights) in pure bf16 (``precision="bf16"``, the default on CUDA; the bare arm runs the same bf16
model), at blocks 11 and 6: ``gpu_features_per_min_vit_b16_block11`` / ``_block6``
(400-step equivalent, warmed up at the timed K, >= 50 timed steps) and ``mfu_block11`` =
model FLOP/s achieved (FLOPs of the bare step counted by ``torch.utils.flop_counter``) ÷ the
detected GPU's dense bf16 peak.

    python benchmarks/optimizer.py              # CPU ratio (+ GPU figures when CUDA is present)
    python benchmarks/optimizer.py --gpu-only   # GPU figures only (benchmarks/gpu.sh)
    python benchmarks/optimizer.py --smoke      # seconds: tiny sizes, GPU code path run on the CPU
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from vitviz_core.errors import VitvizError  # noqa: E402
from vitviz_core.optimize import optimize_features  # noqa: E402

PAPER_STEPS = 400
# Dense bf16 tensor-core peaks (FLOP/s), matched against torch.cuda.get_device_name(); first hit wins.
BF16_PEAK = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12)]


def peak_bf16(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by name, or None (unknown GPU)."""
    for key, peak in BF16_PEAK:
        if key in name:
            return peak
    return None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def truncated_forward(net: nn.Module, layer: int) -> Callable[[Tensor], Tensor]:
    """``x (B, 3, H, W) -> (B, N, 4C)``: a timm ViT's forward up to ``blocks[layer].mlp.act``
    (the op ``blocks.{layer}.mlp.hook_post`` captures), with no hooks."""
    for attr in ("patch_embed", "_pos_embed", "blocks"):
        if not hasattr(net, attr):
            raise VitvizError(f"truncated_forward needs a timm VisionTransformer (no {attr})")

    def fwd(x: Tensor) -> Tensor:
        x = net.patch_embed(x)
        x = net._pos_embed(x)
        x = net.patch_drop(x)
        x = net.norm_pre(x)
        for blk in net.blocks[:layer]:
            x = blk(x)
        blk = net.blocks[layer]
        x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))
        return blk.mlp.act(blk.mlp.fc1(blk.norm2(x)))  # (B, N, 4C)

    return fwd


def bare_step(fwd: Callable[[Tensor], Tensor], x: Tensor, k: int, amp: bool) -> None:
    """Forward to the hook and backward of each image's channel mean to the input."""
    x.grad = None
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        act = fwd(x)  # (B, N, 4C)
    n = x.shape[0] // k
    ch = torch.arange(k, device=x.device).repeat_interleave(n)  # (B,) feature of each copy
    obj = act[:, 1:].float().mean(dim=1).gather(1, ch[:, None]).sum()
    obj.backward()


def time_bare(fwd: Callable[[Tensor], Tensor], x: Tensor, k: int, steps: int, amp: bool) -> float:
    """Seconds per bare step over ``steps`` steps."""
    _sync(x.device)
    t = time.perf_counter()
    for _ in range(steps):
        bare_step(fwd, x, k, amp)
    _sync(x.device)
    return (time.perf_counter() - t) / steps


def time_optimizer(model, hook: str, k: int, steps: int, dev: torch.device, **kw) -> float:
    """Seconds per optimizer step: (run of 1 + steps) - (run of 1 step), over ``steps``."""

    def run(s: int) -> float:
        _sync(dev)
        t = time.perf_counter()
        optimize_features(model, hook, list(range(k)), steps=s, progress=False, **kw)
        _sync(dev)
        return time.perf_counter() - t

    short = run(1)
    return (run(1 + steps) - short) / steps


def count_flops(fwd: Callable[[Tensor], Tensor], x: Tensor, k: int, amp: bool) -> float:
    """Model FLOPs of one bare step (forward + input-gradient backward) on ``x``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        bare_step(fwd, x, k, amp)
    return float(fc.get_total_flops())


def cpu_ratio(args: argparse.Namespace) -> None:
    from vitviz_core.models import load_model

    try:
        lm, note = load_model(args.model), ""
    except VitvizError:
        lm, note = (
            load_model(args.model, weights="random"),
            " (random init: speed does not depend on weights)",
        )
    hook = f"blocks.{args.layer}.mlp.hook_post"
    k, n, s = args.features, args.n_augment, args.steps
    size = args.image_size
    dev = torch.device("cpu")
    kw = dict(recipe=args.recipe, n_augment=n, image_size=size)
    fwd = truncated_forward(lm.model, args.layer)
    x = torch.rand(k * n, 3, size, size, requires_grad=True)  # (K*n, 3, H, W)
    print(
        f"# CPU: {lm.name}{note}, {hook}, K={k} features x n={n} copies = batch {k * n} at {size}px, "
        f"recipe {args.recipe}; {s} timed steps per arm, {args.repeats} interleaved repeats; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"(shared machine: other processes may be running)",
        flush=True,
    )
    time_bare(fwd, x, k, 1, False)  # warm-up
    optimize_features(lm, hook, list(range(k)), steps=1, progress=False, **kw)
    bare, opt = [], []
    for r in range(args.repeats):
        bare.append(time_bare(fwd, x, k, s, False))
        opt.append(time_optimizer(lm, hook, k, s, dev, **kw))
        print(
            f"repeat {r + 1}: bare step {bare[-1]:.3f}s  optimizer step {opt[-1]:.3f}s  "
            f"ratio {opt[-1] / bare[-1]:.3f}",
            flush=True,
        )
    mb, mo = statistics.median(bare), statistics.median(opt)
    paired = statistics.median(o / b for o, b in zip(opt, bare))
    print(
        f"median s/step: bare forward+input-backward {mb:.3f}s; optimize_features {mo:.3f}s; "
        f"ratio of medians {mo / mb:.3f}"
    )
    # headline: median of the per-repeat ratios (each pair ran back to back under the same load)
    print(f"step_overhead_ratio: {paired:.3f}")


def gpu_figures(args: argparse.Namespace, dev: torch.device) -> None:
    import timm

    low = dev.type == "cuda"
    dtype = torch.bfloat16 if low else torch.float32
    k, n, s, warm = args.gpu_features, args.n_augment, args.gpu_steps, args.gpu_warmup
    size = 224
    torch.manual_seed(0)
    net = (
        timm.create_model("vit_base_patch16_224", pretrained=False)
        .to(dev, dtype)
        .eval()
        .requires_grad_(False)
    )
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (smoke run)"
    peak = peak_bf16(name) if dev.type == "cuda" else None
    kw = dict(
        recipe=args.recipe,
        n_augment=n,
        normalize=((0.5,) * 3, (0.5,) * 3),
        input_size=size,
        precision="bf16" if low else "fp32",
        batch_features=k,
        compile=args.gpu_compile,
    )
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"# GPU: vit_base_patch16_224 (random init) on {name}, {'pure bf16 model' if low else 'fp32'}, "
        f"K={k} x n={n} = batch {k * n}, recipe {args.recipe}, compile={args.gpu_compile}; warm-up {warm} "
        f"steps at K={k}, then ({warm} + {s}) - ({warm}) steps timed",
        flush=True,
    )
    for layer in args.gpu_layers:
        hook = f"blocks.{layer}.mlp.hook_post"
        optimize_features(net, hook, list(range(k)), steps=warm, progress=False, **kw)  # warm-up at K
        _sync(dev)
        t0 = time.perf_counter()
        optimize_features(net, hook, list(range(k)), steps=warm, progress=False, **kw)
        _sync(dev)
        t1 = time.perf_counter()
        optimize_features(net, hook, list(range(k)), steps=warm + s, progress=False, **kw)
        _sync(dev)
        t2 = time.perf_counter()
        per_step = ((t2 - t1) - (t1 - t0)) / s
        fpm = 60.0 * k / (per_step * PAPER_STEPS)
        fwd = truncated_forward(net, layer)
        x = torch.rand(k * n, 3, size, size, device=dev, dtype=dtype, requires_grad=True)
        bare_step(fwd, x, k, False)
        bare = time_bare(fwd, x, k, s, False)
        flops = count_flops(fwd, x[:n].detach().requires_grad_(True), 1, False) * k  # one feature's batch x K
        achieved = flops / per_step
        print(
            f"block {layer}: optimizer {per_step * 1e3:.1f} ms/step, bare model {bare * 1e3:.1f} ms/step "
            f"(overhead ratio {per_step / bare:.3f}); model {flops / 1e12:.2f} TFLOP/step, "
            f"{achieved / 1e12:.1f} TFLOP/s achieved",
            flush=True,
        )
        print(f"gpu_features_per_min_vit_b16_block{layer}: {fpm:.2f}")
        if layer == 11:
            print(
                f"mfu_block11: {achieved / peak:.3f}"
                if peak
                else f"mfu_block11: unknown GPU ({name}: no bf16 peak in BF16_PEAK)"
            )
        del x
    print(
        "# paper: ~90 s per 400-step ViT-B/16 feature on an RTX 2080 Ti = 0.67 features/min; "
        "issue 10 goal: >= 100 features/min at block 11"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit-ti16", help="CPU model (built-in name or timm ViT)")
    p.add_argument("--layer", type=int, default=11, help="CPU hook block: blocks.{layer}.mlp.hook_post")
    p.add_argument("--features", type=int, default=4, help="K features (CPU)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per arm and repeat (CPU)")
    p.add_argument("--n-augment", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--recipe", default="paper", choices=["paper", "released"])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--gpu-features", type=int, default=32, help="K on the GPU (batch K x n)")
    p.add_argument("--gpu-steps", type=int, default=50, help="timed GPU steps (>= 50)")
    p.add_argument("--gpu-warmup", type=int, default=5)
    p.add_argument("--gpu-layers", type=lambda v: [int(i) for i in v.split(",")], default=[11, 6])
    p.add_argument("--gpu-compile", action="store_true", help="optimize_features(compile=True) on the GPU")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU ratio (fails without CUDA)")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes; runs the GPU code path on the CPU to check it (numbers meaningless)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if args.gpu_only and not cuda and not args.smoke:
        print("error: --gpu-only but CUDA is not available here", file=sys.stderr)
        return 2
    if args.smoke:
        args.features, args.n_augment, args.steps, args.repeats = 1, 2, 1, 1
        args.gpu_features, args.gpu_steps, args.gpu_warmup = 1, 1, 1
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}")
    if not args.gpu_only:
        cpu_ratio(args)
    if (cuda or args.smoke) and not args.no_gpu:
        gpu_figures(args, torch.device("cuda" if cuda else "cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
