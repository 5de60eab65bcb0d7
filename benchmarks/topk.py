"""Benchmark: exemplar search (streaming top-k over many features) vs a bare forward pass.

Both run in one process on the same decoded images (held in memory, same DataLoader and
batch size), alternating, and the best of ``--rounds`` timings of each is compared. Timings
are process CPU time by default (``--clock cpu``): on a shared machine wall time mostly
measures the neighbours; ``--clock wall`` for a quiet machine. The
search scores every channel of every requested hook (patch-mean and patch-max), keeps the
top-k images with their patch maps, and stops the forward pass after the deepest hook; the
bare pass is ``model(x)`` to the logits. Caching is off, so the search really runs.

    python benchmarks/topk.py                      # vit-ti16, 256 images, 12 x mlp.hook_post

The last line is ``topk_overhead_ratio: X`` (search time / forward time; goal <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import TensorDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-ti16")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--data", default="imagenet-sample-1000")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--hooks", default="blocks.{i}.mlp.hook_post",
                    help="hook name pattern, {i} runs over every block")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vitviz_core.data import ImageFolderDataset, find_dataset
    from vitviz_core.evaluate.common import make_loader
    from vitviz_core.evaluate.exemplars import find_exemplars
    from vitviz_core.models import load_model

    lm = load_model(args.model, weights=args.weights)
    depth = len(getattr(lm.model, "blocks", []))
    hooks = [args.hooks.format(i=i) for i in range(depth)] if "{i}" in args.hooks else args.hooks.split(",")
    ds = ImageFolderDataset(find_dataset(args.data), transform=lm.eval_transform(), max_images=args.images)
    t0 = time.perf_counter()
    xs = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 3, H, W) decoded once
    print(f"model {lm.name} ({lm.weights_source}); {len(ds)} images of {args.data} "
          f"decoded in {time.perf_counter() - t0:.1f}s; batch {args.batch_size}; "
          f"{len(hooks)} hooks, k={args.k}; torch threads {torch.get_num_threads()}")
    data = TensorDataset(xs, torch.zeros(len(xs), dtype=torch.long), torch.arange(len(xs)))
    loader = make_loader(data, args.batch_size)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def bare() -> float:
        t = clock()
        with torch.inference_mode():
            for x, _, _ in loader:
                lm.model(x)
        return clock() - t

    def search() -> float:
        t = clock()
        res = find_exemplars(lm, data, hooks, k=args.k, batch_size=args.batch_size, cache=False,
                             progress=False)
        assert res.topk[hooks[-1]]["mean"].indices.shape[0] == args.k
        return clock() - t

    with torch.inference_mode():  # warm-up (allocator, kernels, hook-spec probe)
        lm.model(xs[: args.batch_size])
    find_exemplars(lm, TensorDataset(xs[: args.batch_size]), hooks, k=args.k, cache=False, progress=False)
    t_bare, t_search = [], []
    for r in range(args.rounds):
        t_bare.append(bare())
        t_search.append(search())
        print(f"round {r + 1}: forward {t_bare[-1]:.2f}s  search {t_search[-1]:.2f}s ({args.clock} time)")
    fb, fs = min(t_bare), min(t_search)
    print(f"best {args.clock} time: bare forward: {fb:.2f}s ({len(xs) / fb:.1f} img/s); exemplar search: {fs:.2f}s "
          f"({len(xs) / fs:.1f} img/s) over {len(hooks)} hooks x 2 statistics")
    print(f"topk_overhead_ratio: {fs / fb:.3f}")


if __name__ == "__main__":
    main()
