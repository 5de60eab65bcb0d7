"""Benchmark: end-to-end exemplar search vs a plain timm inference loop, both from JPEGs on disk.

Both arms read the same image files through the same DataLoader settings (``make_loader``:
batch size, worker processes, pinned memory on CUDA) and are timed on the wall clock from
the first file read to the last result (on CUDA after a device synchronize):

- **plain**: ``for batch in loader: model(x)`` to the logits (inference mode; bf16 autocast
  on CUDA), nothing kept;
- **search**: ``find_exemplars(model, dataset, hooks, k)`` with caching off: every channel of
  every hook scored by patch-mean and patch-max, top-k images and their patch maps kept,
  forward stopped after the deepest hook.

The arms alternate (plain, search, plain, search, ...) so that load from other processes on
a shared machine hits both; the headline is the median over ``--repeats`` of the ratio of
each back-to-back pair (the ratio of the two arms' medians is printed too).

    python benchmarks/topk.py                   # CPU: vit-ti16, 640 of imagenet-val-1300, 12 x mlp.hook_post
    python benchmarks/topk.py --threads 1       # on a crowded 2-core machine (see the note)
    python benchmarks/topk.py --device cuda     # + gpu_exemplar_images_per_s (ViT-B/16, random init)
    python benchmarks/topk.py --smoke           # seconds: tiny subset, checks the script runs

Printed last: ``exemplar_throughput_ratio: X`` (search images/s / plain images/s; goal >= 0.85
on the CPU) and, on CUDA, ``gpu_exemplar_images_per_s: X``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402


class Repeated(Dataset):
    """``times`` passes over a dataset as one, with distinct indices (for GPU runs long
    enough to time on a small image folder)."""

    def __init__(self, base: Dataset, times: int) -> None:
        self.base, self.times = base, times

    def __len__(self) -> int:
        return len(self.base) * self.times

    def __getitem__(self, i: int):
        x, y, _ = self.base[i % len(self.base)]
        return x, y, i


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default=None, help="default vit-ti16 on CPU, vit_base_patch16_224 (random init) on CUDA"
    )
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--data", default="imagenet-val-1300")
    ap.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per pass, spread over the classes (default 640 on CPU, all 1300 on CUDA)",
    )
    ap.add_argument(
        "--passes", type=int, default=None, help="passes over the images per timing (default 1 CPU, 8 CUDA)"
    )
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 on CPU, 256 on CUDA")
    ap.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: default_num_workers())"
    )
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--hooks", default="blocks.{i}.mlp.hook_post", help="pattern, {i} over every block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny run (48 images, 1 repeat) to check the script")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    if args.smoke:
        args.images, args.repeats, args.passes = args.images or 48, 1, 1

    from vitviz_core.data import ImageFolderDataset, find_dataset
    from vitviz_core.evaluate.common import make_loader, unpack_batch
    from vitviz_core.evaluate.exemplars import default_num_workers, find_exemplars
    from vitviz_core.models import load_model

    name = args.model or ("vit-ti16" if dev.type == "cpu" else "vit_base_patch16_224")
    weights = args.weights if dev.type == "cpu" or args.model else "random"
    lm = load_model(name, weights=weights, device=dev)
    depth = len(getattr(lm.model, "blocks", []))
    hooks = [args.hooks.format(i=i) for i in range(depth)] if "{i}" in args.hooks else args.hooks.split(",")
    n_img = args.images or (640 if dev.type == "cpu" else None)
    base = ImageFolderDataset(find_dataset(args.data), transform=lm.eval_transform(), max_images=n_img)
    passes = args.passes or (1 if dev.type == "cpu" else 8)
    data = Repeated(base, passes) if passes > 1 else base
    bs = args.batch_size or (32 if dev.type == "cpu" else 256)
    workers = default_num_workers() if args.workers is None else args.workers
    amp = dev.type == "cuda"
    n = len(data)
    print(
        f"model {lm.name} ({lm.weights_source}) on {dev}{' bf16 autocast' if amp else ''}; {len(base)} JPEGs of "
        f"{args.data} x {passes} pass(es) = {n} images; batch {bs}; {workers} loader workers; "
        f"{len(hooks)} hooks x 2 statistics, k={args.k}; torch threads {torch.get_num_threads()}; "
        f"{os.cpu_count()} CPUs (shared machine: other processes may be running)"
    )

    def plain() -> float:
        _sync(dev)
        t = time.perf_counter()
        loader = make_loader(data, batch_size=bs, num_workers=workers, pin_memory=dev.type == "cuda")
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            for batch in loader:
                x = unpack_batch(batch, 0)[0]
                lm.model(x.to(dev, non_blocking=True))
        _sync(dev)
        return time.perf_counter() - t

    def search() -> float:
        _sync(dev)
        t = time.perf_counter()
        res = find_exemplars(
            lm,
            data,
            hooks,
            k=args.k,
            batch_size=bs,
            num_workers=workers,
            cache=False,
            progress=False,
            device=dev,
            amp=amp,
        )
        _sync(dev)
        assert res.topk[hooks[-1]]["mean"].indices.shape[0] == min(args.k, n)
        return time.perf_counter() - t

    warm = torch.utils.data.Subset(base, range(min(bs, len(base))))  # allocator, kernels, hook-spec probe
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        lm.model(torch.stack([base[i][0] for i in range(min(bs, len(base)))]).to(dev))
    find_exemplars(
        lm,
        warm,
        hooks,
        k=args.k,
        batch_size=bs,
        num_workers=0,
        cache=False,
        progress=False,
        device=dev,
        amp=amp,
    )
    t_plain, t_search = [], []
    for r in range(args.repeats):
        t_plain.append(plain())
        t_search.append(search())
        print(
            f"repeat {r + 1}: plain {t_plain[-1]:.2f}s ({n / t_plain[-1]:.1f} img/s)  "
            f"search {t_search[-1]:.2f}s ({n / t_search[-1]:.1f} img/s)",
            flush=True,
        )
    mp, ms = statistics.median(t_plain), statistics.median(t_search)
    paired = statistics.median(p / s for p, s in zip(t_plain, t_search))
    print(
        f"median wall time of {args.repeats}: plain inference {mp:.2f}s ({n / mp:.1f} img/s); "
        f"exemplar search {ms:.2f}s ({n / ms:.1f} img/s); ratio of medians {mp / ms:.3f}"
    )
    # headline: median of the per-repeat ratios (each pair ran back to back under the same load)
    print(f"exemplar_throughput_ratio: {paired:.3f}")
    if dev.type == "cuda":
        print(f"gpu_exemplar_images_per_s: {n / ms:.1f}  [{lm.name}, {torch.cuda.get_device_name(dev)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
