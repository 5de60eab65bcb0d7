"""Run the paper's quantitative experiments on the real offline models and print the tables.

- ``token``:     Table 1 analogue on ViT-Ti/16: natural accuracy, the isolating-CLS sweep over
                 the join layer L = 0..depth, the patch-dropping sweep, and the classifier
                 head on every patch token (mean, best position, Fig. 7 map).
- ``masking``:   Table 2 analogue: full / foreground-only / background-only top-1 and top-5
                 and top-5 normalised by the full-image top-5, for ViT-Ti/16 and
                 EfficientNet-Lite0, foreground from the img-focus saliency model.
- ``frequency``: Fig. 16 analogue: top-1 versus radial low-pass cut-off, both models, with the
                 paired difference — the same function, images and settings as the book page
                 (``studies_eval.frequency_run``, cached), so the README shows the page's result.
- ``probe``:     DINOv2 ViT-S/14 with a linear probe fitted on imagenet-sample-1000 and
                 evaluated on imagenet-val-1300 (plus its token-mixing table).

Every number is printed with its 95 % bootstrap interval; the full results (with the model,
weights, data and settings that produced them) are written as JSON to ``--out``.

    python benchmarks/paper_tables.py --parts token,masking,frequency
    python benchmarks/paper_tables.py --parts frequency --kinds low,gaussian,high
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def _p(e) -> str:
    return e.percent(2)


def run_token(args, out: dict) -> None:
    from vitviz_core.evaluate.token_mixing import token_mixing_experiment
    from vitviz_core.models import load_model

    lm = load_model(args.vit)
    res = token_mixing_experiment(lm, data_name=args.data, max_images=args.images,
                                  batch_size=args.batch_size, n_boot=args.n_boot,
                                  progress=not args.quiet)
    d = res.depth
    print(f"\n== Table 1 analogue: {lm.name} ({lm.weights_source}), {res.record.data.get('n_images')} "
          f"images of {args.data}; {res.record.duration_s:.0f}s")
    print(f"{'setting':44s} {'top-1 % [95% CI]':>24s} {'top-5 % [95% CI]':>24s}")
    rows = [("natural", res.natural),
            (f"isolating CLS (joins at layer {d - 1}, L={d - 1})", res.isolate.get(d - 1)),
            ("head on the average patch token", res.patch_pooled),
            ("head on each patch: mean per-patch accuracy", res.patch_mean),
            (f"classifier head on each patch: best {res.best_position}", res.patch_best)]
    for name, r in rows:
        if r:
            print(f"{name:44s} {_p(r[1]):>24s} {_p(r[5]):>24s}")
    print("\nisolating-CLS sweep (CLS alone in blocks [0, L), joined from block L):")
    for layer, r in res.isolate.items():
        print(f"  L={layer:2d}  top-1 {_p(r[1]):>24s}  top-5 {_p(r[5]):>24s}")
    print("patch-dropping sweep (only CLS continues from block L):")
    for layer, r in res.drop.items():
        print(f"  L={layer:2d}  top-1 {_p(r[1]):>24s}  top-5 {_p(r[5]):>24s}")
    print("per-patch top-1 map (%):")
    for row in res.patch_map[1]:
        print("  " + " ".join(f"{100 * v:4.0f}" for v in row))
    out["token"] = res.to_dict()


def run_masking(args, out: dict) -> None:
    from vitviz_core.evaluate.masking import masking_experiment
    from vitviz_core.models import load_model

    models = [load_model(args.vit), load_model(args.cnn)]
    out["masking"] = {}
    for fill in args.fills.split(","):
        for mode in args.mask_modes.split(","):
            t0 = time.perf_counter()
            res = masking_experiment(models, masks="foreground", mode=mode, threshold=args.threshold,
                                     fill=fill, data_name=args.data, max_images=args.images,
                                     batch_size=args.batch_size, n_boot=args.n_boot,
                                     progress=not args.quiet)
            print(f"\n== Table 2 analogue: img-focus foreground ({mode}, threshold {args.threshold}), "
                  f"fill {fill}; {time.perf_counter() - t0:.0f}s")
            print(f"{'model':20s} {'cond':11s} {'top-1 %':>22s} {'top-5 %':>22s} {'top-5 / full top-5 %':>24s}")
            for name, r in res.items():
                for c in ("full", "foreground", "background"):
                    norm = _p(r.normalized_top5[c]) if c in r.normalized_top5 else ""
                    print(f"{name:20s} {c:11s} {_p(r.top1[c]):>22s} {_p(r.top5[c]):>22s} {norm:>24s}")
                print(f"{'':20s} foreground covers {100 * r.foreground_fraction:.1f}% of pixels; "
                      f"{r.empty_masks} empty masks; {r.record.duration_s:.0f}s")
            out["masking"][f"{mode}/{fill}"] = {n: r.to_dict() for n, r in res.items()}


def run_frequency(args, out: dict) -> None:
    """Fig. 16 through the book page's own computation (``studies_eval.frequency_run`` on the
    same image subset, cut-offs and settings as ``book/vit_vs_cnn.md`` on the cpu profile), so
    the README and the page show one result; it is cached, so after the page ran this prints
    the page's numbers at once."""
    from vitviz_core import studies_eval as se
    from vitviz_core.models import load_model
    from vitviz_core.profiles import get_profile

    prof = get_profile("cpu")
    n = args.freq_images if args.freq_images is not None else se.images_for(None, prof, "frequency")
    parse = lambda text: [math.inf if c.strip() == "inf" else float(c) for c in text.split(",")]  # noqa: E731
    low = parse(args.cutoffs) if args.cutoffs else se.cutoffs_for(None, prof, "low")
    kinds = args.kinds.split(",")
    high = se.cutoffs_for(None, prof, "high") if "high" in kinds else []
    gauss = se.cutoffs_for(None, prof, "gaussian") if "gaussian" in kinds else []
    studies = []
    for name in (args.vit, args.cnn):
        lm = se.prefer_channels_last(load_model(name))
        data = se.eval_subset(args.data, n, lm.pixel_transform())
        t0 = time.perf_counter()
        studies.append(se.frequency_run(lm, data, low=low, high=high, gaussian=gauss,
                                        batch_size=prof.batch_size, n_boot=prof.bootstrap,
                                        progress=not args.quiet))
        print(f"[{lm.name}: {len(data)} images of {args.data}; {time.perf_counter() - t0:.0f}s]")
    out["frequency"] = {"n_images": len(data), "profile": prof.name}
    for kind in ["low"] + [k for k in ("gaussian", "high") if k in kinds]:
        frame = se.frequency_frame(studies[0], studies[1], kind, n_boot=prof.bootstrap)
        print(f"\n== Fig. 16 analogue ({kind}), {len(data)} images, top-1 % [95% CI], paired difference:")
        print(frame.to_string(index=False))
        out["frequency"][kind] = frame.to_dict(orient="records")


def run_probe(args, out: dict) -> None:
    from vitviz_core.evaluate.probe import evaluate_probe, extract_features, fit_linear_probe
    from vitviz_core.evaluate.token_mixing import token_mixing_experiment
    from vitviz_core.models import load_model

    lm = load_model(args.dino)
    teacher = load_model(args.cnn) if args.distill else None
    t0 = time.perf_counter()
    feats, labels, tlog = extract_features(lm, features="cls", views=args.views, teacher=teacher,
                                           data_name=args.pool, batch_size=args.batch_size,
                                           progress=not args.quiet)
    probe = fit_linear_probe(feats, tlog if tlog is not None else labels, num_classes=1000,
                             features="cls", num_prefix_tokens=lm.model.num_prefix_tokens,
                             labels=labels if tlog is not None else None)
    fit_s = time.perf_counter() - t0
    ev = evaluate_probe(lm, probe, data_name=args.data, max_images=args.images,
                        batch_size=args.batch_size, n_boot=args.n_boot, progress=not args.quiet)
    print(f"\n== DINOv2 linear probe (CLS) fitted on {args.pool} ({feats.shape[0]} views, "
          f"distill={args.distill}; {fit_s:.0f}s): top-1 {_p(ev.top1)}, top-5 {_p(ev.top5)} on {args.data}")
    out["probe"] = {"eval": ev.to_dict(), "views": args.views, "distill": bool(args.distill),
                    "pool": args.pool}
    if args.probe_token_mixing:
        res = token_mixing_experiment(lm, head=probe.head_for(lm.model), token_head=probe.token_head,
                                      data_name=args.data, max_images=args.images,
                                      batch_size=args.batch_size, n_boot=args.n_boot,
                                      progress=not args.quiet)
        d = res.depth
        print(f"  natural {_p(res.natural[1])}; isolating CLS L={d - 1}: {_p(res.isolate[d - 1][1])}; "
              f"head on average patch {_p(res.patch_pooled[1])}; mean per-patch {_p(res.patch_mean[1])}; "
              f"best patch {_p(res.patch_best[1])}")
        out["probe"]["token"] = res.to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="token,masking,frequency")
    ap.add_argument("--vit", default="vit-ti16")
    ap.add_argument("--cnn", default="efficientnet-lite0")
    ap.add_argument("--dino", default="dinov2-s14")
    ap.add_argument("--data", default="imagenet-val-1300")
    ap.add_argument("--pool", default="imagenet-sample-1000", help="fitting pool of the probe")
    ap.add_argument("--images", type=int, default=None, help="evenly spread subset (default: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--fills", default="black")
    ap.add_argument("--mask-modes", default="box")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--cutoffs", default=None, help="low-pass cut-offs (default: the book's cpu profile)")
    ap.add_argument("--kinds", default="low", help="low and any of gaussian,high")
    ap.add_argument("--freq-images", type=int, default=None,
                    help="images for the frequency part (default: the book's cpu profile, 400)")
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--distill", action="store_true")
    ap.add_argument("--probe-token-mixing", action="store_true")
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
    path = Path(args.out) if args.out else config.cache_dir() / "paper_tables" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
