"""Print the paper's tables on the real offline models, through the book chapters' own ``run``.

Each part calls the chapter function the book page calls, so a table here and the page's table
come from one code path (results are cached, so after the page ran with the same settings this
prints at once):

- ``token``:     Table 1 analogue on ViT-Ti/16 (natural accuracy, CLS isolated until the last
                 block, the head on every patch token) and the isolation, patch-drop and
                 one-way sweeps: :func:`vitviz_core.chapters.token_mixing.run`.
- ``masking``:   Table 2 analogue: full / foreground-only / background-only accuracy, ViT-Ti/16
                 and EfficientNet-Lite0, foreground boxes from the img-focus saliency model:
                 :func:`vitviz_core.chapters.vit_vs_cnn.run`, section ``masking``.
- ``frequency``: Fig. 16 analogue: top-1 versus radial low-pass / Gaussian / high-pass cut-off,
                 both models, with the paired difference: the same run, section ``frequency``.
- ``probe``:     DINOv2 ViT-S/14 with a linear probe fitted on imagenet-sample-1000, its Table 1
                 and sweep: :func:`vitviz_core.chapters.token_mixing.run`, section ``dino``.

``--images`` (default: all 1300) sets the sample of the token, masking and probe parts; the
frequency part uses the cpu profile's 400 images unless ``--freq-images`` says otherwise (the
book page's sample). Every number carries its 95 % bootstrap interval; the full results (and
the setting that produced them) are written as JSON to ``--out``.

    python benchmarks/paper_tables.py --parts token,masking,frequency
    python benchmarks/paper_tables.py --parts masking --fills black,blur --images 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vitviz_core.chapters import token_mixing, vit_vs_cnn  # noqa: E402


def common(args: argparse.Namespace) -> dict:
    """Profile overrides every part shares."""
    ov = dict(bootstrap=args.n_boot, batch_size=args.batch_size, seed=args.seed)
    if args.device:
        ov["device"] = args.device
    return ov


def _print(res, *names: str) -> None:
    for name in names:
        if name in res.tables:
            print(f"\n-- {name}")
            print(res.tables[name].to_string(index=False))


def run_token(args, out: dict) -> None:
    res = token_mixing.run(
        {"vit": args.vit},
        args.profile,
        sections=("table", "sweep"),
        token_table_images=args.images,
        token_sweep_images=args.images,
        **common(args),
    )
    print(f"\n== Table 1 analogue: {res.setting}")
    _print(res, "tm_table1", "tm_sweep_table", "tm_one_way_table")
    print("per-patch top-1 map (%):")
    for row in res.data["table"].patch_map[1]:
        print("  " + " ".join(f"{100 * v:4.0f}" for v in row))
    out["token"] = {"setting": res.setting, **res.numbers(), "result": res.data["table"].to_dict()}


def run_masking(args, out: dict) -> None:
    res = vit_vs_cnn.run(
        {"vit": args.vit, "cnn": args.cnn},
        args.profile,
        sections=("masking",),
        masking_images=args.images,
        masking_fills=tuple(args.fills.split(",")),
        threshold=args.threshold,
        **common(args),
    )
    print(f"\n== Table 2 analogue: img-focus foreground boxes (threshold {args.threshold}); {res.setting}")
    _print(res, "vc_table2", "vc_fills_table")
    print(
        f"ViT minus CNN, normalised top-5 (points): background only {res.values['vc_d_bg']}, "
        f"foreground only {res.values['vc_d_fg']}"
    )
    out["masking"] = {
        "setting": res.setting,
        **res.numbers(),
        "results": {
            fill: {n: r.to_dict() for n, r in st.results.items()} for fill, st in res.data["masking"].items()
        },
    }


def run_frequency(args, out: dict) -> None:
    """Fig. 16 through the book page's own computation: on the page's sample, cut-offs and
    settings unless overridden, so the README and the page show one result."""
    parse = lambda text: tuple(math.inf if c.strip() == "inf" else float(c) for c in text.split(","))  # noqa: E731
    ov = common(args)
    if args.cutoffs:
        ov["low_cutoffs"] = parse(args.cutoffs)
    if args.freq_images is not None:
        ov["frequency_images"] = args.freq_images
    res = vit_vs_cnn.run({"vit": args.vit, "cnn": args.cnn}, args.profile, sections=("frequency",), **ov)
    n = res.values["vc_n_freq"]
    out["frequency"] = {"n_images": n, "profile": res.profile.name, "setting": res.setting}
    for kind in args.kinds.split(","):
        frame = res.tables[f"vc_{'gauss' if kind == 'gaussian' else kind}_table"]
        print(f"\n== Fig. 16 analogue ({kind}), {n} images, top-1 % [95% CI], paired difference:")
        print(frame.to_string(index=False))
        out["frequency"][kind] = frame.to_dict(orient="records")


def run_probe(args, out: dict) -> None:
    res = token_mixing.run(
        {"vit": args.vit, "dino": args.dino},
        args.profile,
        sections=("dino",),
        run_dino=True,
        probe_views=args.views,
        token_table_images=args.images,
        token_sweep_images=args.images,
        **common(args),
    )
    print(f"\n== {res.values['tm_dino_text']}")
    _print(res, "tm_dino_table1")
    out["probe"] = {
        "setting": res.setting,
        **res.numbers(),
        "views": args.views,
        "result": res.data["dino_table"].to_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="token,masking,frequency")
    ap.add_argument("--vit", default="vit-ti16")
    ap.add_argument("--cnn", default="efficientnet-lite0")
    ap.add_argument("--dino", default="dinov2-s14")
    ap.add_argument("--profile", default="cpu", help="the chapters' profile (cpu | full); overridden below")
    ap.add_argument("--device", default=None, help="default: the profile's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--images",
        type=int,
        default=None,
        help="imagenet-val-1300 images of the token, masking and probe parts (default: all)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--fills", default="black")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--cutoffs", default=None, help="low-pass cut-offs (default: the profile's)")
    ap.add_argument("--kinds", default="low", help="low and any of gaussian,high")
    ap.add_argument(
        "--freq-images",
        type=int,
        default=None,
        help="images for the frequency part (default: the profile's, 400 on cpu)",
    )
    ap.add_argument("--views", type=int, default=4, help="views per pool image when fitting the probe")
    ap.add_argument("--out", default=None, help="JSON file (default: cache_dir()/paper_tables/<time>.json)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    from vitviz_core import config

    out: dict = {"args": vars(args), "torch_threads": torch.get_num_threads()}
    runners = {"token": run_token, "masking": run_masking, "frequency": run_frequency, "probe": run_probe}
    for part in args.parts.split(","):
        t0 = time.perf_counter()
        runners[part](args, out)
        out.setdefault("timings_s", {})[part] = round(time.perf_counter() - t0, 1)
        print(f"[{part}: {time.perf_counter() - t0:.0f}s]", flush=True)
    path = (
        Path(args.out)
        if args.out
        else config.cache_dir() / "paper_tables" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
