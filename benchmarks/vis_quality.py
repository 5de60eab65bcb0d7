"""Benchmark: feature-visualization quality of every recipe at equal compute, and horama beside it.

Every recipe (``paper`` pixels, ``fourier``, ``maco``; :data:`vitviz_core.recipes.RECIPES`) runs
the same features with the same number of image passes (``steps x copies`` per feature) on
``vit-ti16`` (FFN blocks 2, 6, 10) and ``dinov2-s14`` (FFN block 6). Each visualization gets
the quality scores of :func:`vitviz_core.quality.quality_scores` against the feature's top-8
exemplars in ``imagenet-sample-1000`` (``--pool-images`` of it).

Side by side, in the same run: horama 0.3.0 (the MaCo authors' toolbox; ``pip install
.[bench]``) runs its ``maco`` and ``fourier`` on the same model, hook and features with the same
number of image passes (``steps`` NAdam steps x ``copies`` crops, one feature at a time as its
API works). horama downloads its magnitude template from the web; this script first writes the
file it expects (``spectrum_decorrelated.npy`` in a temporary working folder) from the offline
images, in horama's own colour basis.

Printed: one table row per (model, hook, method) and the lines

- ``quality_best_recipe: NAME``: among our recipes whose mean spectral naturalness is <= 1.5, the
  one with the highest mean activation ratio (else the most natural one);
- ``hf_energy_ratio_best: X``: its mean spectral naturalness (1 = natural images);
- ``activation_ratio_best: X``: its mean activation ratio (clean activation / exemplars');
- ``steps_to_exemplar_level: N``: the first checked step (every ``--check-every``) at which its
  mean clean activation over all features reaches the exemplars' mean activation (``never``
  if it does not within the budget);
- ``activation_vs_horama: X``: its mean activation ratio / horama's best mean activation ratio,
  on the (model, hook, feature) sets horama ran on;
- ``seconds_vs_horama: X``: its wall seconds / horama's best method's wall seconds there.

Usage::

    python benchmarks/vis_quality.py                      # defaults: 32 steps x 4 copies, 8 features per hook
    python benchmarks/vis_quality.py --features 4 --steps 64 --models vit-ti16 --horama-hooks 6
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vitviz_core.optimize import optimize_features, score_images  # noqa: E402
from vitviz_core.quality import quality_scores  # noqa: E402

HOOKS = {"vit-ti16": [2, 6, 10], "dinov2-s14": [6]}


def _hook(i: int) -> str:
    return f"blocks.{i}.mlp.hook_post"


# ---------------------------------------------------------------------------------------------
# horama
# ---------------------------------------------------------------------------------------------


def write_horama_template(folder: Path, size: int = 224, n_images: int = 256) -> Path:
    """horama's ``spectrum_decorrelated.npy`` (3, H, W//2+1) from the offline images: the mean
    amplitude spectrum of natural images in horama's decorrelated colour basis (the inverse of
    its ``recorrelate_colors`` matrix), each image standardized like horama's images."""
    from horama.common import get_color_correlation_svd_sqrt

    from vitviz_core.param import natural_images

    imgs = natural_images(n_images, (size, size))  # (n, 3, H, W)
    m_inv = torch.linalg.inv(get_color_correlation_svd_sqrt("cpu").double()).float()
    flat = imgs.permute(0, 2, 3, 1) @ m_inv  # (n, H, W, 3)
    x = flat.permute(0, 3, 1, 2)
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    mag = torch.fft.rfft2(x).abs().mean(dim=0)  # (3, H, W//2+1)
    path = folder / "spectrum_decorrelated.npy"
    np.save(path, mag.numpy().astype(np.float32), allow_pickle=False)
    return path


def run_horama(
    method: str, loaded, hook: str, features: list[int], steps: int, copies: int, image_size: int
) -> tuple[torch.Tensor, float]:
    """horama's ``maco`` or ``fourier`` for each feature -> (K, 3, 224, 224) in [0, 1], seconds."""
    import horama

    from vitviz_core.hooks import capture

    fn = getattr(horama, method)
    mean = torch.tensor(loaded.data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(loaded.data_config["std"]).view(3, 1, 1)
    size = loaded.input_size[0]
    images, seconds = [], 0.0
    with capture(loaded.model, [hook], stop_early=True, detach=False) as cap:
        for f in features:

            def objective(x: torch.Tensor, f: int = f) -> torch.Tensor:  # x: (crops, 3, H, W) normalised
                cap.forward(x)
                act = cap.activations[hook][:, cap.specs[hook].num_prefix_tokens :, f]  # (crops, T)
                return act.mean()

            start = time.perf_counter()
            with contextlib.redirect_stderr(open(os.devnull, "w")):
                img, _ = fn(
                    objective,
                    total_steps=steps,
                    image_size=image_size,
                    model_input_size=size,
                    crops_per_iteration=copies,
                    device="cpu",
                )
            seconds += time.perf_counter() - start
            pix = (img.detach().cpu() * std + mean).clamp(0, 1)[None]  # (1, 3, S, S)
            images.append(F.interpolate(pix, size=(size, size), mode="area"))
    return torch.cat(images), seconds


# ---------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------


def run_ours(
    recipe: str, loaded, hook: str, features: list[int], steps: int, copies: int, seed: int, check_every: int
) -> tuple[torch.Tensor, float, dict[int, float]]:
    """(images (K, 3, H, W), seconds, step -> mean clean activation of the K images)."""
    checks = list(range(0, steps + 1, check_every)) + [steps]
    res = optimize_features(
        loaded,
        hook,
        features,
        recipe=recipe,
        steps=steps,
        n_augment=copies,
        seed=seed,
        snapshot_steps=sorted(set(checks)),
        progress=False,
    )
    curve = {s: float(score_images(loaded, hook, img, features).mean()) for s, img in res.snapshots.items()}
    return res.images, res.seconds, curve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vit-ti16,dinov2-s14")
    ap.add_argument("--recipes", default="paper,fourier,maco")
    ap.add_argument(
        "--blocks",
        default=None,
        help="FFN blocks for every model, e.g. 6 (default: 2,6,10 on vit-ti16, 6 on dinov2-s14)",
    )
    ap.add_argument("--features", type=int, default=8, help="features per hook (0..N-1; the issue's grid: 8)")
    ap.add_argument(
        "--steps",
        type=int,
        default=32,
        help="optimizer steps per feature (default 32: 128 image passes, near the cpu profile's 80)",
    )
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool-images", type=int, default=200)
    ap.add_argument("--check-every", type=int, default=8)
    ap.add_argument("--stability", action="store_true", help="also run a second seed (doubles the cost)")
    ap.add_argument("--horama", default="maco,fourier", help="horama methods ('' = none)")
    ap.add_argument("--horama-hooks", default="6", help="vit-ti16 blocks horama runs on")
    ap.add_argument(
        "--horama-size",
        type=int,
        default=None,
        help="horama canvas in pixels (default: the model's input size, so that both sides "
        "optimize the same number of pixels per image pass; horama's own default, 1280, "
        "makes each of its steps ~30x costlier in FFTs)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save", default=None, help="folder for a PNG per (model, hook, method)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps > 128 or args.copies > 4:
        print("note: above the default budget of 128 steps x 4 copies")

    from vitviz_core.evaluate.exemplars import find_exemplars
    from vitviz_core.models import load_model
    from vitviz_core.plot import save_grid_png

    recipes = [r for r in args.recipes.split(",") if r]
    horama_methods = [m for m in args.horama.split(",") if m]
    horama_hooks = {int(b) for b in args.horama_hooks.split(",") if b}
    features = list(range(args.features))
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps x {args.copies} copies per feature, "
        f"{len(features)} features per hook, exemplars: top-8 of {args.pool_images} imagenet-sample-1000 images"
    )
    rows: list[dict] = []
    curves: dict[str, dict[int, list[float]]] = {r: {} for r in recipes}
    ex_levels: list[float] = []
    workdir = Path(tempfile.mkdtemp(prefix="vitviz-horama-"))
    if horama_methods:
        write_horama_template(workdir)
    header = f"{'model':<11} {'hook':<23} {'method':<15} {'act_ratio':>9} {'HF/nat':>7} {'agree':>6} {'stab':>5} {'seconds':>8}"
    print(header)
    for name in [m for m in args.models.split(",") if m]:
        loaded = load_model(name)
        blocks = (
            [int(b) for b in args.blocks.split(",")]
            if args.blocks
            else HOOKS.get(name, [len(loaded.model.blocks) // 2])
        )
        found = find_exemplars(
            loaded,
            None,
            hooks=[_hook(b) for b in blocks],
            k=8,
            stats=("mean",),
            keep_maps=False,
            max_images=args.pool_images,
            progress=False,
        )
        for b in blocks:
            hook = _hook(b)
            ex_levels.append(float(np.mean([np.mean([v for _, v in found.top(hook, f)]) for f in features])))
            methods = [("ours", r) for r in recipes]
            if name == "vit-ti16" and b in horama_hooks:
                methods += [("horama", m) for m in horama_methods]
            for who, method in methods:
                if who == "ours":
                    imgs, secs, curve = run_ours(
                        method, loaded, hook, features, args.steps, args.copies, args.seed, args.check_every
                    )
                    for s, v in curve.items():
                        curves[method].setdefault(s, []).append(v)
                else:
                    cwd = os.getcwd()
                    os.chdir(workdir)
                    try:
                        imgs, secs = run_horama(
                            method,
                            loaded,
                            hook,
                            features,
                            args.steps,
                            args.copies,
                            args.horama_size or loaded.input_size[0],
                        )
                    finally:
                        os.chdir(cwd)
                seed2 = None
                if args.stability and who == "ours":
                    seed2 = optimize_features(
                        loaded,
                        hook,
                        features,
                        recipe=method,
                        steps=args.steps,
                        n_augment=args.copies,
                        seed=args.seed + 1,
                        progress=False,
                    ).images
                sc = quality_scores(loaded, hook, features, imgs, images_seed2=seed2, exemplars=found)
                label = method if who == "ours" else f"horama-{method}"
                row = dict(
                    model=name,
                    hook=hook,
                    method=label,
                    who=who,
                    seconds=secs,
                    ratio=float(np.mean([s.activation_ratio or 0.0 for s in sc])),
                    hf=float(np.mean([s.naturalness for s in sc])),
                    agree=float(np.mean([s.exemplar_agreement for s in sc])),
                    stab=(float(np.mean([s.seed_stability for s in sc])) if seed2 is not None else None),
                )
                rows.append(row)
                stab = "-" if row["stab"] is None else f"{row['stab']:.2f}"
                print(
                    f"{name:<11} {hook:<23} {label:<15} {row['ratio']:>9.2f} {row['hf']:>7.2f} "
                    f"{row['agree']:>+6.2f} {stab:>5} {secs:>8.1f}",
                    flush=True,
                )
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    save_grid_png(
                        imgs,
                        [f"#{s.feature}: {s.caption()}" for s in sc],
                        Path(args.save) / f"{name}_{b}_{label}.png",
                        ncols=len(features),
                        cell_inches=2.4,
                        title=f"{name} {hook} {label}: {args.steps} steps x {args.copies} copies",
                    )

    def mean_of(method: str, who: str = "ours", key: str = "ratio", where=None) -> float:
        vals = [
            r[key] for r in rows if r["method"] == method and r["who"] == who and (where is None or where(r))
        ]
        return float(np.mean(vals)) if vals else float("nan")

    natural = [r for r in recipes if mean_of(r, key="hf") <= 1.5]
    best = (
        max(natural, key=lambda r: mean_of(r))
        if natural
        else min(recipes, key=lambda r: mean_of(r, key="hf"))
    )
    print(f"quality_best_recipe: {best}")
    print(f"hf_energy_ratio_best: {mean_of(best, key='hf'):.2f}")
    print(f"activation_ratio_best: {mean_of(best):.2f}")
    level = float(np.mean(ex_levels))
    reached = [s for s in sorted(curves[best]) if np.mean(curves[best][s]) >= level]
    print(f"steps_to_exemplar_level: {reached[0] if reached else 'never'}")
    hrows = [r for r in rows if r["who"] == "horama"]
    if hrows:
        keys = {(r["model"], r["hook"]) for r in hrows}
        on = lambda r: (r["model"], r["hook"]) in keys  # noqa: E731
        hbest = max({r["method"] for r in hrows}, key=lambda m: mean_of(m, "horama"))
        print(f"horama_best_method: {hbest}")
        print(f"activation_vs_horama: {mean_of(best, where=on) / mean_of(hbest, 'horama'):.2f}")
        print(
            f"seconds_vs_horama: {mean_of(best, key='seconds', where=on) / mean_of(hbest, 'horama', 'seconds'):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
