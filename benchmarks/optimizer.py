"""Benchmark: the batched feature-visualization optimizer vs a one-feature-at-a-time loop.

Same model, hook, recipe and step count on both sides, measured side by side in one run:

- batched: ``optimize_features(model, hook, range(K))``: K features x n augmentations per step;
- loop:    ``optimize_features(model, hook, [f])`` for each of the K features in turn.

Both sides use the same optimizer code (early-stopped forward, per-feature random streams),
so the ratio isolates the gain from batching. Features per minute are reported for the steps
actually run and as a 400-step equivalent (the paper's run length): ``60 / (seconds per
feature-step * 400)``.

CPU defaults (a few minutes on 2 cores): ViT-Ti/16 (``vit-ti16``) and DINOv2-S/14
(``dinov2-s14``) at 224 px, ``blocks.6.mlp.hook_post``, 4 features x 4 steps. If CUDA is
available, also ViT-B/16 at 224 px in bf16 (random init: speed does not depend on the
weights), printed as ``gpu_features_per_min_vit_b16: X``.

The last line is ``speedup_batched_vs_loop: X``, the geometric mean over the benchmarked
models of (loop seconds / batched seconds).

Usage::

    python benchmarks/optimizer.py                       # CPU defaults
    python benchmarks/optimizer.py --features 16 --steps 20 --threads 1
    python benchmarks/optimizer.py --models vit-ti16 --gpu-features 128 --gpu-steps 20
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from vitviz_core.errors import VitvizError  # noqa: E402
from vitviz_core.optimize import optimize_features  # noqa: E402

PAPER_STEPS = 400


def _load(name: str, device: str):
    """A LoadedModel; random init (said so) when the weights are not on this machine."""
    from vitviz_core.models import load_model

    try:
        return load_model(name, device=device), ""
    except VitvizError as exc:
        return load_model(name, weights="random", device=device), f" [random init: {exc}]"


def _time_pair(model, hook: str, k: int, steps: int, repeats: int, **kw) -> tuple[float, float, float]:
    """(batched seconds, loop seconds, batched s/step), best of ``repeats``, interleaved."""
    optimize_features(model, hook, [0], steps=1, progress=False, **kw)  # warm-up (probe, allocator)
    batched, loop = [], []
    for _ in range(repeats):
        batched.append(optimize_features(model, hook, list(range(k)), steps=steps, progress=False, **kw).seconds)
        loop.append(sum(optimize_features(model, hook, [f], steps=steps, progress=False, **kw).seconds
                        for f in range(k)))
    return min(batched), min(loop), min(batched) / steps


def _fpm(seconds: float, k: int, steps: int, equivalent_steps: int | None = None) -> float:
    """Features per minute; with ``equivalent_steps`` scaled to runs of that many steps."""
    per_feature_step = seconds / (k * steps)
    return 60.0 / (per_feature_step * (equivalent_steps or steps))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vit-ti16,dinov2-s14", help="comma-separated model names (CPU part)")
    p.add_argument("--layer", type=int, default=6, help="block index of blocks.{i}.mlp.hook_post")
    p.add_argument("--features", type=int, default=4, help="K features per run (CPU)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (CPU)")
    p.add_argument("--n-augment", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--recipe", default="paper", choices=["paper", "released"])
    p.add_argument("--repeats", type=int, default=1, help="best of N interleaved repeats")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--gpu-features", type=int, default=64)
    p.add_argument("--gpu-loop-features", type=int, default=4, help="features in the GPU loop side")
    p.add_argument("--gpu-steps", type=int, default=10)
    p.add_argument("--no-gpu", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads, recipe {args.recipe}, n={args.n_augment}, "
          f"{args.image_size}px, hook blocks.{args.layer}.mlp.hook_post")
    header = (f"{'model':<12} {'device':<6} {'K':>3} {'steps':>5} {'batched s':>10} {'loop s':>9} "
              f"{'s/step':>7} {'feat/min batched':>17} {'feat/min loop':>14} {'(400-step eq.)':>15} {'speedup':>8}")
    print(header)
    speedups: list[float] = []
    common = dict(recipe=args.recipe, n_augment=args.n_augment, image_size=args.image_size)

    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, note = _load(name, "cpu")
        hook = f"blocks.{args.layer}.mlp.hook_post"
        k, s = args.features, args.steps
        tb, tl, sps = _time_pair(model, hook, k, s, args.repeats, **common)
        speedups.append(tl / tb)
        print(f"{name:<12} {'cpu':<6} {k:>3} {s:>5} {tb:>10.1f} {tl:>9.1f} {sps:>7.2f} "
              f"{_fpm(tb, k, s):>17.2f} {_fpm(tl, k, s):>14.2f} "
              f"{_fpm(tb, k, s, PAPER_STEPS):>7.3f}/{_fpm(tl, k, s, PAPER_STEPS):<7.3f} {tl / tb:>8.2f}{note}",
              flush=True)
        del model

    if torch.cuda.is_available() and not args.no_gpu:
        import timm

        net = timm.create_model("vit_base_patch16_224", pretrained=False).cuda().eval().requires_grad_(False)
        norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        hook = f"blocks.{args.layer}.mlp.hook_post"
        kb, kl, s = args.gpu_features, args.gpu_loop_features, args.gpu_steps
        gpu_kw = dict(common, normalize=norm, input_size=224, amp=True)
        optimize_features(net, hook, [0], steps=2, progress=False, **gpu_kw)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimize_features(net, hook, list(range(kb)), steps=s, progress=False, **gpu_kw)
        torch.cuda.synchronize()
        tb = time.perf_counter() - start
        start = time.perf_counter()
        for f in range(kl):
            optimize_features(net, hook, [f], steps=s, progress=False, **gpu_kw)
        torch.cuda.synchronize()
        tl = time.perf_counter() - start
        per_feat_b, per_feat_l = tb / kb, tl / kl
        speedups.append(per_feat_l / per_feat_b)
        fpm_b = _fpm(tb, kb, s, PAPER_STEPS)
        print(f"{'vit-b16':<12} {'cuda':<6} {kb:>3} {s:>5} {tb:>10.1f} {tl:>9.1f} {tb / s:>7.3f} "
              f"{_fpm(tb, kb, s):>17.1f} {_fpm(tl, kl, s):>14.1f} "
              f"{fpm_b:>7.1f}/{_fpm(tl, kl, s, PAPER_STEPS):<7.1f} {per_feat_l / per_feat_b:>8.2f}"
              f" [bf16, random init; loop side: {kl} features; {torch.cuda.get_device_name()}]")
        print("# paper: <= 90 s per 400-step ViT-B/16 feature on an RTX 2080 Ti = >= 0.67 features/min")
        print(f"gpu_features_per_min_vit_b16: {fpm_b:.2f}")

    geo = math.exp(sum(math.log(x) for x in speedups) / len(speedups)) if speedups else float("nan")
    print(f"speedup_batched_vs_loop: {geo:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
