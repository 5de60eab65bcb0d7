"""``python -m vitviz_core render``: feature visualizations of one hook point as a PNG grid.

Example::

    python -m vitviz_core render --model vit-ti16 --hook blocks.6.mlp.hook_post \\
        --features 0-15 --out grid.png                     # cpu profile: fast recipe, ~2 min
    python -m vitviz_core render ... --profile full        # the paper's recipe, 400 x 8 (GPU)

Every argument is checked before the (long) optimization starts: the output path, the step
count, the feature list, the device, then the model, the hook and the feature range. Bad input
raises a :class:`~vitviz_core.errors.VitvizError`, which the command line prints as a one-line
``error:`` message (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

from vitviz_core.errors import VitvizError

__all__ = ["parse_features", "check_output_path", "check_device", "render_settings", "render_command"]

_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_features(text: str) -> list[int]:
    """``"0-15"``, ``"3,7,42"`` or ``"0-3,8"`` -> feature indices (duplicates dropped, order kept)."""
    out: list[int] = []
    parts = [p.strip() for p in str(text).split(",")]
    for part in parts:
        match = _TOKEN.match(part)
        if not match:
            raise VitvizError(
                f"malformed --features {text!r}: use a range like 0-15, a list like 3,7,42, or both (0-3,8)"
            )
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise VitvizError(f"malformed --features {text!r}: range {part} runs backwards")
        if hi - lo >= 100_000:
            raise VitvizError(f"--features {text!r} asks for {hi - lo + 1} features; that is too many")
        out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))


def check_output_path(path: str | os.PathLike) -> Path:
    """The PNG path, after checking that it can be written (raises :class:`VitvizError`)."""
    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise VitvizError(f"--out {str(path)!r} must end in .png")
    if out.is_dir():
        raise VitvizError(f"--out {str(out)!r} is a directory; give a file name such as {out / 'grid.png'}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise VitvizError(f"output directory {str(parent)!r} does not exist; create it first")
    if out.exists() and not os.access(out, os.W_OK):
        raise VitvizError(f"cannot overwrite {str(out)!r}: permission denied")
    try:  # os.access is not enough (root, read-only mounts): try for real
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".vitviz-write-test-"):
            pass
    except OSError as exc:
        raise VitvizError(
            f"output directory {str(parent)!r} is not writable ({exc.strerror or exc})"
        ) from None
    return out


def check_device(device: str) -> str:
    """``device`` if torch can use it here, else a :class:`VitvizError`."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise VitvizError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VitvizError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VitvizError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise VitvizError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise VitvizError(f"unsupported --device {device!r}; use cpu, cuda, cuda:N or mps")
    return device


def render_settings(args: argparse.Namespace) -> tuple[str, int, int]:
    """``(recipe, steps, copies)`` from ``--profile``, ``--recipe``, ``--steps`` and ``--copies``.

    Without ``--steps`` the profile decides: ``cpu`` runs its fast recipe
    (``Profile.vis_recipe``) at ``render_steps x render_augment``; ``full`` the paper's recipe
    at 400 x 8. ``--steps`` alone keeps the recipe's own number of copies.
    """
    from vitviz_core.profiles import get_profile
    from vitviz_core.recipes import get_recipe

    prof = get_profile(getattr(args, "profile", None) or "cpu")
    recipe = args.recipe or prof.vis_recipe
    if args.steps is None:
        steps, copies = prof.render_steps, prof.render_augment
    else:
        steps, copies = args.steps, get_recipe(recipe).n_augment
    if getattr(args, "copies", None) is not None:
        copies = args.copies
    return recipe, steps, copies


def render_command(args: argparse.Namespace) -> int:
    """Run ``render`` with the parsed arguments of :func:`vitviz_core.cli.build_parser`."""
    # 1. cheap checks first: nothing slow happens before the arguments are known to be good
    if args.steps is not None and args.steps <= 0:
        raise VitvizError(f"--steps must be a positive integer (got {args.steps})")
    if getattr(args, "copies", None) is not None and args.copies <= 0:
        raise VitvizError(f"--copies must be a positive integer (got {args.copies})")
    if args.image_size is not None and args.image_size <= 0:
        raise VitvizError(f"--image-size must be positive (got {args.image_size})")
    if args.batch_features is not None and args.batch_features <= 0:
        raise VitvizError(f"--batch-features must be positive (got {args.batch_features})")
    features = parse_features(args.features)
    out = check_output_path(args.out)
    device = check_device(args.device)
    recipe, steps, copies = render_settings(args)

    # 2. the model, the hook and the feature range (HookError / UnknownModelError)
    from vitviz_core.hooks import resolve_hook
    from vitviz_core.models import load_model
    from vitviz_core.optimize import check_features, estimate_seconds, optimize_features
    from vitviz_core.plot import save_grid_png

    loaded = load_model(args.model, weights=args.weights, device=device, seed=args.seed)
    spec = resolve_hook(loaded.model, args.hook)
    check_features(features, spec, args.hook)

    # 3. the optimization, with an ETA measured on one step of the real batch
    run = dict(
        recipe=recipe,
        steps=steps,
        n_augment=copies,
        seed=args.seed,
        image_size=args.image_size,
        batch_features=args.batch_features,
    )
    eta = estimate_seconds(loaded, args.hook, features, **run)
    print(
        f"render: {len(features)} features of {args.hook} ({loaded.name}), {recipe} recipe, {steps} steps x "
        f"{copies} copies on {device}; ETA about {_clock(eta)}",
        flush=True,
    )
    result = optimize_features(loaded, args.hook, features, progress=not args.quiet, **run)
    init = "" if loaded.pretrained else ", random init"
    title = (
        f"{loaded.name} ({loaded.arch}{init}) {args.hook}: {recipe} recipe, "
        f"{steps} steps x {copies} copies, seed {args.seed}"
    )
    labels = result.labels
    if args.scores:
        from vitviz_core.quality import format_scores, quality_scores

        scores = quality_scores(loaded, args.hook, result.features, result.images, progress=not args.quiet)
        labels = [f"#{s.feature}\n{s.caption()}" for s in scores]
    meta = {"Software": "vitviz_core", "Description": json.dumps(result.config, default=str)}
    save_grid_png(result.images, labels, out, title=title, metadata=meta)
    what = f"{len(features)} feature{'s' if len(features) != 1 else ''}"
    print(
        f"wrote {out}: {what} of {args.hook} ({loaded.name}, {recipe} recipe, "
        f"{steps} steps x {copies} copies) in {result.seconds:.1f} s ({result.seconds_per_step:.3f} s/step)"
    )
    if args.scores:
        print(format_scores(scores))
    return 0


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
