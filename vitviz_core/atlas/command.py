"""``python -m vitviz_core atlas``: build (or resume) a neuron atlas from the command line.

Example::

    python -m vitviz_core atlas --model vit-ti16 --hooks 'blocks.6.mlp.hook_post' \\
        --features 0-7 --data imagenet-val-1300 --out atlas/ --executor ray --steps 32 --n-augment 2

Every argument is checked before any long work starts (output folder, executor, Ray
address, model, hook pattern, feature range, data); bad input ends with a one-line
``error:`` message (exit status 2).
"""

from __future__ import annotations

from vitviz_core.recipes import RECIPES

import argparse
import json

from vitviz_core.errors import VitvizError

__all__ = ["add_atlas_arguments", "atlas_command"]


def add_atlas_arguments(p: argparse.ArgumentParser) -> None:
    """The ``atlas`` subcommand's arguments."""
    p.add_argument("--model", default="vit-ti16", help="built-in name or timm model name")
    p.add_argument("--weights", default="auto", help="auto | builtin | hub | random | PATH")
    p.add_argument(
        "--timm-kwargs",
        default=None,
        metavar="JSON",
        help='extra timm.create_model arguments, e.g. \'{"img_size": 32, "depth": 2}\'',
    )
    p.add_argument(
        "--hooks",
        required=True,
        help="glob over hook names, e.g. 'blocks.*.mlp.hook_post' "
        "(comma-separated for several; see `python -m vitviz_core hooks MODEL`)",
    )
    p.add_argument("--features", required=True, help="per hook: a range like 0-63, a list 3,7,42, or all")
    p.add_argument("--data", default="imagenet-val-1300", help="dataset name under VITVIZ_DATA, or a folder")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: VITVIZ_DATA)")
    p.add_argument("--max-images", type=int, default=None, help="use this many images, spread evenly")
    p.add_argument("--out", required=True, help="output folder (store, index.jsonl, site)")
    p.add_argument(
        "--recipe",
        default="maco",
        choices=sorted(RECIPES),
        help="visualization recipe (default maco: the best of benchmarks/vis_quality.py on CPU budgets)",
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's, 400)")
    p.add_argument("--n-augment", type=int, default=None, help="augmented copies per step (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=9, help="exemplars per neuron")
    p.add_argument("--chunk", type=int, default=8, help="features per visualization task")
    p.add_argument("--shard-size", type=int, default=256, help="images per exemplar task")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass in exemplar tasks")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="join this Ray cluster (host:port, ray://host:port, auto)")
    p.add_argument(
        "--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)"
    )
    p.add_argument("--device", default="cpu", help="local executor: cpu | cuda | cuda:N")
    p.add_argument("--no-site", action="store_true", help="do not write the HTML pages")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def atlas_command(args: argparse.Namespace) -> int:
    """Run ``atlas`` with the parsed arguments of :func:`vitviz_core.cli.build_parser`."""
    from vitviz_core.atlas.executors import check_address
    from vitviz_core.atlas.plan import DataSpec, ModelSpec, plan_job
    from vitviz_core.atlas.run import run_atlas
    from vitviz_core.atlas.store import check_writable
    from vitviz_core.render import check_device

    # 1. cheap checks first
    out = check_writable(args.out)
    if args.address and args.executor != "ray":
        raise VitvizError("--address needs --executor ray")
    if args.workers is not None and args.workers < 1:
        raise VitvizError(f"--workers must be >= 1 (got {args.workers})")
    if args.max_images is not None and args.max_images < 1:
        raise VitvizError(f"--max-images must be >= 1 (got {args.max_images})")
    if args.address:
        check_address(args.address)
    device = check_device(args.device)
    kwargs = {}
    if args.timm_kwargs:
        try:
            kwargs = json.loads(args.timm_kwargs)
        except json.JSONDecodeError as exc:
            raise VitvizError(f"--timm-kwargs is not JSON ({exc.msg}): {args.timm_kwargs!r}") from None
        if not isinstance(kwargs, dict):
            raise VitvizError("--timm-kwargs must be a JSON object")

    # 2. the job: model, hooks, features, data (loads the model once on the CPU)
    job = plan_job(
        ModelSpec(args.model, args.weights, tuple(sorted(kwargs.items()))),
        args.hooks,
        args.features,
        DataSpec(args.data, args.data_root, args.max_images),
        recipe=args.recipe,
        steps=args.steps,
        n_augment=args.n_augment,
        seed=args.seed,
        k=args.k,
        chunk=args.chunk,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )

    # 3. run or resume
    report = run_atlas(
        job,
        out,
        executor=args.executor,
        device=device,
        address=args.address,
        workers=args.workers,
        site=not args.no_site,
        progress=not args.quiet,
    )
    print(report.summary())
    return 0
