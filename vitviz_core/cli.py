"""Command line: ``python -m vitviz_core {models,hooks,render,atlas} ...``.

- ``models``: the built-in models, where their weights come from, whether they are here.
- ``hooks MODEL``: every hook name of a model with its layout, channels and grid.
- ``render``: feature visualizations of one hook point, written as a labelled PNG grid.
- ``atlas``: a neuron atlas (visualizations, exemplars, maps, a static site), local or on Ray.

Bad input (a :class:`~vitviz_core.errors.VitvizError`) ends with a one-line ``error:``
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from vitviz_core.errors import VitvizError


def _cmd_models(args: argparse.Namespace) -> int:
    from vitviz_core.models import describe_builtin_models

    rows = describe_builtin_models()
    headers = ["name", "timm architecture", "available", "weights source"]
    table = [[r["name"], r["arch"], "yes" if r["available"] else "no", r["source"]] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for r in rows:
        if not r["available"] and r.get("how_to_get"):
            print(f"\n{r['name']}: {r['how_to_get']}")
    return 0


def _cmd_hooks(args: argparse.Namespace) -> int:
    from vitviz_core.hooks import list_hooks
    from vitviz_core.models import load_model

    loaded = load_model(args.model, weights=args.weights)
    specs = list_hooks(loaded.model, include_raw=args.all)
    print(f"# {loaded.name} ({loaded.weights_source}); input {tuple(loaded.data_config['input_size'])}")
    headers = ["hook", "module", "layout", "prefix", "channels", "grid"]
    table = [
        [
            s.name,
            s.module_path,
            s.layout,
            str(s.num_prefix_tokens),
            str(s.channels),
            "x".join(map(str, s.grid)) if s.grid else "-",
        ]
        for s in specs
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from vitviz_core.render import render_command

    return render_command(args)


def _recipe_names() -> list[str]:
    from vitviz_core.recipes import RECIPES

    return sorted(RECIPES)


def _recipe_help() -> dict[str, str]:
    from vitviz_core.recipes import RECIPE_SUMMARY

    return RECIPE_SUMMARY


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m vitviz_core``."""
    parser = argparse.ArgumentParser(prog="python -m vitviz_core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list built-in models and whether their weights are here")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("hooks", help="list the hook names of a model with shapes")
    p.add_argument("model", help="built-in name (see `models`) or any timm model name")
    p.add_argument("--weights", default="auto", help="auto | builtin | hub | random | PATH")
    p.add_argument("--all", action="store_true", help="also list raw named_modules() paths")
    p.set_defaults(func=_cmd_hooks)

    p = sub.add_parser("render", help="visualize features of one hook point as a PNG grid")
    p.add_argument("--model", default="vit-ti16", help="built-in name or timm model name")
    p.add_argument("--weights", default="auto", help="auto | builtin | hub | random | PATH")
    p.add_argument("--hook", default="blocks.6.mlp.hook_post", help="hook name (see `hooks`)")
    p.add_argument("--features", default="0-7", help="e.g. 0-15 or 3,7,42")
    p.add_argument(
        "--profile",
        default="cpu",
        choices=["cpu", "full"],
        help="cpu: the fast recipe and a budget of minutes on a laptop (README example about 2 "
        "minutes on 2 cores); full: the paper recipe at 400 steps x 8 copies (GPU)",
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    p.add_argument(
        "--copies",
        type=int,
        default=None,
        help="augmented copies per feature per step (default: the profile's)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=_recipe_names(),
        help="; ".join(f"{k}: {v}" for k, v in _recipe_help().items()) + " (default: the profile's)",
    )
    p.add_argument(
        "--scores",
        action="store_true",
        help="print the quality scores of every visualization "
        "(activation vs exemplars, spectral naturalness, exemplar agreement)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="size of the optimized canvas (resized to the model input); default: the input size",
    )
    p.add_argument("--batch-features", type=int, default=None, help="features per optimizer batch")
    p.add_argument("--out", default="grid.png", help="output PNG path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_render)

    _add_atlas_parser(sub)
    return parser


def _add_atlas_parser(sub: argparse._SubParsersAction) -> None:
    """The ``atlas`` subcommand (arguments and code in :mod:`vitviz_core.atlas.command`)."""
    from vitviz_core.atlas.command import add_atlas_arguments, atlas_command

    p = sub.add_parser("atlas", help="build or resume a neuron atlas (local or Ray), with a static site")
    add_atlas_arguments(p)
    p.set_defaults(func=atlas_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VitvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
