"""Interactive explorer for the book: model, layer, feature -> visualization and exemplars.

:class:`FeatureExplorer` is an ipywidgets box (model dropdown, layer slider, feature box,
a Render button) that shows, for the chosen FFN feature, its optimized visualization next
to its most-activating dataset images with their patch activation maps (paper Fig. 3).
The static pages of the book cannot run widgets, so every chapter also shows the
explorer's default selection as an ordinary figure (:meth:`FeatureExplorer.default_figure`)
and the widget's plain-text form says how to use it live.

The live widget stays responsive on CPU: a Render click whose selection needs a new
optimization shows a status line and a phase progress bar while it works (controls
disabled), and each selection's result is kept in a small in-memory cache, so selecting it
again redraws at once. :func:`run_into_output` is the shared click handler of every
explorer (also :mod:`vitviz_core.studies_eval.explorers`): the figure goes into the
``Output`` widget's ``outputs`` as a PNG (so it can be read back in a kernel and in a
browser), an exception as a visible stderr output.

:func:`feature_panel` draws one such row and is used on its own by the chapters.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["feature_panel", "FeatureExplorer", "figure_output", "run_into_output"]

logger = logging.getLogger(__name__)


def figure_output(fig: Figure, dpi: int = 100) -> dict:
    """A Jupyter ``display_data`` output holding ``fig`` as a base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    w, h = fig.get_size_inches() * dpi
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "text/plain": f"<Figure size {w:.0f}x{h:.0f}>",
        },
    }


def run_into_output(
    out: Any,
    work: Callable[[], Figure],
    *,
    status: Any = None,
    busy: str = "working...",
    controls: Sequence[Any] = (),
) -> bool:
    """Run ``work`` for a widget click and put its figure into the ``Output`` widget ``out``.

    While it runs, ``status`` (an ipywidgets ``Label`` or ``None``) reads ``busy`` and the
    ``controls`` are disabled. The figure replaces ``out``'s outputs; an exception replaces
    them with a stderr output (its traceback) and the status says it failed. Returns whether
    the figure was drawn.
    """
    was = [getattr(c, "disabled", False) for c in controls]
    for c in controls:
        c.disabled = True
    if status is not None:
        status.value = busy
    t0 = time.perf_counter()
    try:
        fig = work()
        shown = figure_output(fig)
    except Exception as exc:  # noqa: BLE001 - shown to the reader instead of vanishing in the kernel log
        out.outputs = ({"output_type": "stream", "name": "stderr", "text": traceback.format_exc()},)
        if status is not None:
            status.value = f"failed: {type(exc).__name__}: {exc}"
        logger.debug("explorer render failed", exc_info=True)
        return False
    finally:
        for c, d in zip(controls, was):
            c.disabled = d
    out.outputs = (shown,)
    if status is not None:
        status.value = f"done in {time.perf_counter() - t0:.1f} s"
    return True


def _hwc(image: Any) -> np.ndarray:
    """PIL image or (3, H, W) tensor in [0, 1] -> (H, W, 3) float array."""
    if isinstance(image, Tensor):
        return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def feature_panel(rows: Sequence[dict], *, cell_inches: float = 2.4, fontsize: float = 9.0) -> Figure:
    """One row per feature: its visualization, then exemplars with activation-map overlays.

    Each row is a dict with ``vis`` ((3, H, W) in [0, 1]), ``title`` (str), ``exemplars``
    (images in [0, 1] as (3, H, W) tensors, already cropped like the model input),
    ``maps`` ((k, H, W) activation maps at the exemplars' size) and optional
    ``exemplar_labels`` (one short string per exemplar).
    """
    if not rows:
        raise ValueError("feature_panel needs at least one row")
    from vitviz_core.plot import wrap_label

    ncols = 1 + max(len(r.get("exemplars", [])) for r in rows)
    lines = max(
        wrap_label(t, cell_inches, fontsize).count("\n") + 1
        for r in rows
        for t in [r.get("title", ""), *(r.get("exemplar_labels") or [""])]
    )
    label_h = lines * fontsize * 1.35 / 72 + 0.08
    fig = Figure(figsize=(ncols * cell_inches * 1.02, len(rows) * (cell_inches + label_h)), dpi=100)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.set_axis_off()
        axes[r, 0].imshow(_hwc(row["vis"]))
        axes[r, 0].set_title(wrap_label(row.get("title", ""), cell_inches, fontsize), fontsize=fontsize)
        maps = row.get("maps")
        labels = row.get("exemplar_labels") or [""] * len(row.get("exemplars", []))
        for j, image in enumerate(row.get("exemplars", [])):
            ax = axes[r, j + 1]
            ax.imshow(_hwc(image))
            if maps is not None:
                m = maps[j].float().cpu().numpy()
                m = (m - m.min()) / (m.max() - m.min() + 1e-8)
                ax.imshow(
                    m,
                    cmap="inferno",
                    alpha=0.45,
                    extent=(-0.5, image.shape[-1] - 0.5, image.shape[-2] - 0.5, -0.5),
                )
            ax.set_title(wrap_label(labels[j], cell_inches, fontsize - 1), fontsize=fontsize - 1)
    height = fig.get_figheight()
    fig.subplots_adjust(
        left=0.005,
        right=0.995,
        top=1 - label_h / height,
        bottom=0.005,
        wspace=0.03,
        hspace=label_h / cell_inches + 0.02,
    )
    return fig


def exemplar_rows(
    loaded: Any,
    hook: str,
    features: Sequence[int],
    vis: Tensor,
    *,
    pool: str = "imagenet-sample-1000",
    pool_root: Any = None,
    pool_images: int | None = None,
    k: int = 4,
    progress: bool = False,
    captions: Sequence[str] | None = None,
) -> list[dict]:
    """Rows for :func:`feature_panel`: each feature's visualization beside its top-``k``
    images from the image folder ``pool`` (found under ``pool_root`` or the configured
    data root; ``pool_images`` spread evenly over it) and their activation maps.

    ``vis`` is (K, 3, H, W), one visualization per feature, in the order of ``features``;
    ``captions`` (one per feature, e.g. its quality scores) go under the feature's title.
    """
    from vitviz_core.data import class_name
    from vitviz_core.evaluate.exemplars import activation_maps, find_exemplars

    found = find_exemplars(
        loaded,
        None,
        hooks=[hook],
        k=k,
        stats=("mean",),
        keep_maps=False,
        data_name=pool,
        data_root=pool_root,
        max_images=pool_images,
        progress=progress,
    )
    to_pixels = loaded.pixel_transform()
    rows = []
    for i, f in enumerate(features):
        top = found.top(hook, f, "mean")
        images = [to_pixels(img) for img in found.images(hook, f, "mean")]  # k x (3, H, W)
        x = torch.stack([loaded.normalize(img[None])[0] for img in images])  # (k, 3, H, W)
        maps = activation_maps(loaded, x.to(next(loaded.model.parameters()).device), hook, f)
        rows.append(
            {
                "vis": vis[i],
                "exemplars": images,
                "title": f"{hook.split('.hook')[0]} #{f}"
                + (f"\n{captions[i].removeprefix(f'#{f}: ')}" if captions is not None else ""),
                "maps": maps.cpu(),
                "exemplar_labels": [
                    f"{class_name(found.labels[j])} ({v:.2f})" if found.labels else f"{v:.2f}" for j, v in top
                ],
            }
        )
    return rows


class FeatureExplorer:
    """Pick a model, a layer and a feature; see its visualization and its exemplars.

    Args:
        models: name -> LoadedModel.
        pool, pool_root, pool_images: the image folder searched for exemplars (see
            :func:`exemplar_rows`).
        hook_template: hook name with ``{i}`` for the block index.
        steps, n_augment, recipe: optimizer settings (the chapter's profile).
        k: exemplars per feature.
        default: (model name, layer, feature) drawn by :meth:`default_figure`.
        max_cached: selections whose results (visualization and exemplars) are kept.
    """

    def __init__(
        self,
        models: dict[str, Any],
        pool: str = "imagenet-sample-1000",
        *,
        pool_root: Any = None,
        pool_images: int | None = None,
        hook_template: str = "blocks.{i}.mlp.hook_post",
        steps: int = 100,
        n_augment: int = 4,
        k: int = 4,
        default: tuple[str, int, int] | None = None,
        seed: int = 0,
        recipe: str = "paper",
        max_cached: int = 32,
    ) -> None:
        if not models:
            raise ValueError("FeatureExplorer needs at least one model")
        self.models = dict(models)
        self.pool = dict(pool=pool, pool_root=pool_root, pool_images=pool_images)
        self.hook_template = hook_template
        self.steps, self.n_augment, self.k, self.seed, self.recipe = steps, n_augment, k, seed, recipe
        first = next(iter(self.models))
        self.default = default or (first, self._depth(first) // 2, 0)
        self.max_cached = max_cached
        self._rows: OrderedDict[tuple[str, int, int], dict] = OrderedDict()  # selection -> panel row
        self._widget = None

    def _depth(self, name: str) -> int:
        return len(self.models[name].model.blocks)

    def is_cached(self, model_name: str, layer: int, feature: int) -> bool:
        """Whether this selection's result is cached (rendering it again needs no optimization)."""
        return (model_name, int(layer), int(feature)) in self._rows

    def _row(
        self,
        model_name: str,
        layer: int,
        feature: int,
        progress: bool = False,
        phase: Callable[[int, str], None] | None = None,
    ) -> dict:
        """The panel row of one selection, from the cache or computed (and cached)."""
        from vitviz_core.optimize import optimize_features

        key = (model_name, int(layer), int(feature))
        if key in self._rows:
            self._rows.move_to_end(key)
            return self._rows[key]
        if model_name not in self.models:
            raise ValueError(f"unknown model {model_name!r}; choose one of {list(self.models)}")
        loaded = self.models[model_name]
        hook = self.hook_template.format(i=int(layer))
        if phase is not None:
            phase(0, f"optimizing {model_name} {hook} #{feature} ({self.steps} steps)...")
        res = optimize_features(
            loaded,
            hook,
            [int(feature)],
            recipe=self.recipe,
            steps=self.steps,
            n_augment=self.n_augment,
            seed=self.seed,
            progress=progress,
        )
        if phase is not None:
            phase(1, f"searching the pool for the exemplars of {hook} #{feature}...")
        row = exemplar_rows(loaded, hook, [int(feature)], res.images, k=self.k, **self.pool)[0]
        row["title"] = f"{model_name} {row['title']}"
        self._rows[key] = row
        while len(self._rows) > self.max_cached:
            self._rows.popitem(last=False)
        return row

    def render(self, model_name: str, layer: int, feature: int, progress: bool = False) -> Figure:
        """The figure for one selection (optimizes the feature and searches its exemplars,
        unless the selection is cached)."""
        return feature_panel([self._row(model_name, layer, feature, progress=progress)])

    def default_figure(self) -> Figure:
        """The default selection as a plain figure (what the static book page shows)."""
        return self.render(*self.default)

    def widget(self):
        """The ipywidgets box; building it needs a live kernel to be useful.

        Its ``controls`` attribute maps ``model``, ``layer``, ``feature``, ``button``,
        ``status`` (a Label), ``progress`` (the phase bar) and ``output`` to the widgets.
        """
        import ipywidgets as w

        name0, layer0, feat0 = self.default
        model = w.Dropdown(options=list(self.models), value=name0, description="model")
        layer = w.IntSlider(value=layer0, min=0, max=self._depth(name0) - 1, description="layer")
        feature = w.BoundedIntText(
            value=feat0, min=0, max=self._channels(name0, layer0) - 1, description="feature"
        )
        button = w.Button(description="Render", button_style="primary")
        status = w.Label(
            value="choose a selection and press Render", layout=w.Layout(width="100%", overflow="hidden")
        )
        bar = w.IntProgress(value=0, min=0, max=3, description="", layout=w.Layout(width="12em"))
        out = w.Output()
        controls = [model, layer, feature, button]

        def on_model(change: dict) -> None:
            layer.max = self._depth(change["new"]) - 1
            feature.max = self._channels(change["new"], layer.value) - 1

        def on_layer(change: dict) -> None:
            feature.max = self._channels(model.value, change["new"]) - 1

        def phase(i: int, text: str) -> None:
            bar.value, status.value = i, text

        def work() -> Figure:
            sel = (model.value, layer.value, feature.value)
            bar.value = 0 if not self.is_cached(*sel) else 2
            row = self._row(*sel, phase=phase)
            phase(2, "drawing...")
            fig = feature_panel([row])
            bar.value = 3
            return fig

        def on_click(_: Any) -> None:
            cached = self.is_cached(model.value, layer.value, feature.value)
            run_into_output(
                out,
                work,
                status=status,
                controls=controls,
                busy="from the cache..." if cached else "optimizing...",
            )
            if status.value.startswith("done"):  # say what is shown (and whether it was cached)
                status.value += (
                    f": {model.value} {self.hook_template.format(i=layer.value)} #{feature.value}"
                    + (" (cached)" if cached else "")
                )

        model.observe(on_model, names="value")
        layer.observe(on_layer, names="value")
        button.on_click(on_click)
        box = _ExplorerBox(
            [
                w.HBox(controls, layout=w.Layout(flex_flow="row wrap", width="100%")),
                w.HBox([bar, status], layout=w.Layout(width="100%")),
                out,
            ]
        )
        box.controls = dict(
            model=model, layer=layer, feature=feature, button=button, status=status, progress=bar, output=out
        )
        self._widget = box
        return box

    def _channels(self, name: str, layer: int) -> int:
        from vitviz_core.hooks import resolve_hook

        return resolve_hook(self.models[name].model, self.hook_template.format(i=layer)).channels


def _explorer_box_class() -> Callable:
    import ipywidgets as w

    class ExplorerBox(w.VBox):
        """A VBox whose plain-text form (what a static page shows) explains itself."""

        def __repr__(self) -> str:
            return "[interactive explorer: open this chapter in Jupyter to choose model, layer and feature]"

    return ExplorerBox


def _ExplorerBox(children: list) -> Any:  # noqa: N802 - behaves like a class
    return _explorer_box_class()(children)
