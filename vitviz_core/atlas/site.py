"""The atlas site: static HTML pages generated from the store, no server, no CDN, no script.

- ``OUT/index.html``: the job (model, data, recipe) and one row per layer (hook) with a
  preview of its neurons and a link to its grid;
- ``OUT/layers/<hook>.html``: every neuron of the layer as a thumbnail with its grid score;
- ``OUT/neurons/<hook>/f<feature>.html``: the visualization, its objective curve, the scores,
  the top-k dataset exemplars with their activation-map overlays, and links to the
  neighbouring neurons (previous/next feature, the same feature one layer up and down).

Every link and image source is relative, so the folder can be moved, zipped or served from
a built book; no page holds a path of the machine that built it.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

from vitviz_core.atlas.plan import AtlasJob
from vitviz_core.atlas.scores import GRID_SCORE, SCORE_LABELS
from vitviz_core.atlas.store import atomic_write
from vitviz_core.atlas.tasks import THUMB

__all__ = ["build_site", "neuron_page_path", "layer_page_path", "book_site_dir"]

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222}a{color:#1a5fb4;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}table.meta td{padding:2px 10px 2px 0}
.grid{display:flex;flex-wrap:wrap;gap:8px}.cell{width:%dpx;text-align:center;font-size:12px}
.cell img{width:%dpx;height:%dpx;image-rendering:auto;border:1px solid #ccc;display:block}
.row{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}.nav{margin:.6em 0;font-size:14px}
.nav a{margin-right:1em}.big{width:336px;height:336px;border:1px solid #ccc}.muted{color:#777}
.layer{margin:1em 0;padding:.5em 0;border-top:1px solid #eee}svg{background:#fafafa;border:1px solid #ddd}
""" % (THUMB, THUMB, THUMB)


def _slug(hook: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in hook)


def layer_page_path(hook: str) -> str:
    """Path of a layer's grid page, relative to the site root."""
    return f"layers/{_slug(hook)}.html"


def neuron_page_path(hook: str, feature: int) -> str:
    """Path of a neuron's page, relative to the site root."""
    return f"neurons/{_slug(hook)}/f{feature:05d}.html"


def _rel(target: str, page: str) -> str:
    """``target`` (relative to the site root) as seen from ``page`` (relative to the root)."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))


def _page(title: str, page: str, body: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)}</title><link rel="stylesheet" href="{_rel("atlas.css", page)}">'
        f"</head><body>\n{body}\n</body></html>\n"
    ).encode()


def _cell(n: dict[str, Any], page: str, label: str) -> str:
    score = n["scores"].get(GRID_SCORE)
    return (
        f'<div class="cell"><a href="{_rel(neuron_page_path(n["hook"], n["feature"]), page)}">'
        f'<img src="{_rel(n["thumb"], page)}" alt="{html.escape(label)}" loading="lazy"></a>'
        f'{html.escape(label)}<br><span class="muted">{_fmt(score)}</span></div>'
    )


def _sparkline(values: Sequence[float], width: int = 336, height: int = 80) -> str:
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    pts = " ".join(
        f"{i * (width - 8) / (len(values) - 1) + 4:.1f},{height - 4 - (v - lo) / span * (height - 8):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="objective per step">'
        f'<polyline fill="none" stroke="#1a5fb4" stroke-width="1.5" points="{pts}"/></svg>'
        f'<div class="muted">objective per step: {values[0]:.3g} → {values[-1]:.3g}</div>'
    )


def _meta_table(job: AtlasJob) -> str:
    d = job.describe()
    rows = [
        ("model", d["model"]),
        ("weights hash", d["weights_hash"]),
        ("data", f"{d['data']} ({d['n_images']} images)"),
        (
            "visualization",
            f"{d['recipe']} recipe, {d['steps']} steps x {d['n_augment']} augmentations, seed {d['seed']}",
        ),
        ("exemplars", f"top {d['k']} by mean activation over patches"),
        ("vitviz", d["vitviz"]),
    ]
    return (
        '<table class="meta">'
        + "".join(f'<tr><td class="muted">{k}</td><td>{html.escape(str(v))}</td></tr>' for k, v in rows)
        + "</table>"
    )


def build_site(job: AtlasJob, neurons: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Write the site of ``neurons`` (from :func:`vitviz_core.atlas.run.collect_neurons`) into
    ``out``; returns the path of ``index.html``. Files whose bytes do not change are kept."""
    out = Path(out)
    atomic_write(out / "atlas.css", CSS.encode())
    by_hook: dict[str, list[dict[str, Any]]] = {h: [] for h in job.hooks}
    for n in neurons:
        by_hook[n["hook"]].append(n)
    lookup = {(n["hook"], n["feature"]): n for n in neurons}
    title = f"Neuron atlas: {job.model_label}"

    # index: layers
    page = "index.html"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _meta_table(job),
        f"<p>{len(neurons)} neurons in {len(job.hooks)} layer(s). The number under each "
        f"thumbnail: {html.escape(SCORE_LABELS[GRID_SCORE])}.</p>",
    ]
    for hook, items in by_hook.items():
        preview = "".join(_cell(n, page, f"#{n['feature']}") for n in items[:8])
        parts.append(
            f'<div class="layer"><h2><a href="{layer_page_path(hook)}">{html.escape(hook)}</a> '
            f'<span class="muted">({len(items)} neurons)</span></h2><div class="grid">{preview}</div></div>'
        )
    atomic_write(out / page, _page(title, page, "\n".join(parts)))

    # layer grids
    for hook, items in by_hook.items():
        page = layer_page_path(hook)
        body = (
            f'<div class="nav"><a href="{_rel("index.html", page)}">atlas index</a></div>'
            f'<h1>{html.escape(hook)}</h1><p class="muted">{html.escape(job.model_label)}; number = '
            f'{html.escape(SCORE_LABELS[GRID_SCORE])}</p><div class="grid">'
            + "".join(_cell(n, page, f"#{n['feature']}") for n in items)
            + "</div>"
        )
        atomic_write(out / page, _page(f"{hook}: {title}", page, body))

    # neuron pages
    for hook, items in by_hook.items():
        hi = job.hooks.index(hook)
        for i, n in enumerate(items):
            page = neuron_page_path(hook, n["feature"])
            links = [("atlas index", "index.html"), (f"layer {hook}", layer_page_path(hook))]
            if i > 0:
                links.append(
                    (f"← #{items[i - 1]['feature']}", neuron_page_path(hook, items[i - 1]["feature"]))
                )
            if i + 1 < len(items):
                links.append(
                    (f"#{items[i + 1]['feature']} →", neuron_page_path(hook, items[i + 1]["feature"]))
                )
            for dh, word in ((-1, "below"), (1, "above")):
                if 0 <= hi + dh < len(job.hooks) and (job.hooks[hi + dh], n["feature"]) in lookup:
                    links.append(
                        (
                            f"#{n['feature']} one layer {word} ({job.hooks[hi + dh]})",
                            neuron_page_path(job.hooks[hi + dh], n["feature"]),
                        )
                    )
            nav = (
                '<div class="nav">'
                + "".join(f'<a href="{_rel(t, page)}">{html.escape(s)}</a>' for s, t in links)
                + "</div>"
            )
            scores = (
                '<table class="meta">'
                + "".join(
                    f'<tr><td class="muted">{html.escape(SCORE_LABELS[k])}</td><td>{_fmt(v)}</td></tr>'
                    for k, v in n["scores"].items()
                )
                + "</table>"
            )
            ex_cells = []
            for j, e in enumerate(n["exemplars"]):
                cap = f"{html.escape(e['class'] or e['file'].split('/')[-1])}<br>act {e['activation']:.3g}"
                ex_cells.append(
                    f'<div class="cell"><img src="{_rel(e["image"], page)}" alt="exemplar {j + 1}" '
                    f'title="{html.escape(e["file"])}"><img src="{_rel(e["overlay"], page)}" '
                    f'alt="activation map {j + 1}">{cap}</div>'
                )
            body = (
                nav + f"<h1>{html.escape(hook)} #{n['feature']}</h1>"
                f'<p class="muted">{html.escape(job.model_label)}</p><div class="row"><div>'
                f'<img class="big" src="{_rel(n["image"], page)}" alt="feature visualization">'
                f'<div class="muted">feature visualization</div></div><div>{scores}'
                f"{_sparkline(n['history'])}</div></div>"
                f"<h2>Top {len(n['exemplars'])} exemplars of {html.escape(Path(job.data.name).name)} "
                f'(image, then its activation map)</h2><div class="grid">' + "".join(ex_cells) + "</div>"
            )
            atomic_write(out / page, _page(f"{hook} #{n['feature']}: {title}", page, body))
    return out / "index.html"


def book_site_dir(name: str = "atlas", start: str | os.PathLike | None = None) -> Path:
    """Where a book chapter puts its atlas so that the built book serves it: ``_build/html/<name>``
    under the book root (the first folder holding ``_toc.yml`` at or above ``start``, default
    the working directory, which is ``book/`` or the notebook tier's folder during a build).
    The chapter page (``_build/html/book/<chapter>.html``) then links ``../<name>/index.html``.
    Without a book root: ``<start>/<name>``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder / "_build" / "html" / name
    return here / name
