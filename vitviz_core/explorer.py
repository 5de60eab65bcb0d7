"""Interactive explorer for the book: model, layer, feature -> visualization and exemplars.

:class:`FeatureExplorer` is an ipywidgets box (model dropdown, layer slider, feature box,
a Render button) that shows, for the chosen FFN feature, its optimized visualization next
to its most-activating dataset images with their patch activation maps (paper Fig. 3).
The static pages of the book cannot run widgets, so every chapter also shows the
explorer's default selection as an ordinary figure (:meth:`FeatureExplorer.default_figure`)
and the widget's plain-text form says how to use it live.

:func:`feature_panel` draws one such row and is used on its own by the chapters.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["feature_panel", "FeatureExplorer"]


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
    lines = max(wrap_label(t, cell_inches, fontsize).count("\n") + 1 for r in rows
                for t in [r.get("title", ""), *(r.get("exemplar_labels") or [""])])
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
                ax.imshow(m, cmap="inferno", alpha=0.45, extent=(-0.5, image.shape[-1] - 0.5,
                                                                  image.shape[-2] - 0.5, -0.5))
            ax.set_title(wrap_label(labels[j], cell_inches, fontsize - 1), fontsize=fontsize - 1)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.005, right=0.995, top=1 - label_h / height, bottom=0.005, wspace=0.03,
                        hspace=label_h / cell_inches + 0.02)
    return fig


def exemplar_rows(loaded: Any, hook: str, features: Sequence[int], vis: Tensor, *,
                  pool: str = "imagenet-sample-1000", pool_root: Any = None, pool_images: int | None = None,
                  k: int = 4, progress: bool = False, captions: Sequence[str] | None = None) -> list[dict]:
    """Rows for :func:`feature_panel`: each feature's visualization beside its top-``k``
    images from the image folder ``pool`` (found under ``pool_root`` or the configured
    data root; ``pool_images`` spread evenly over it) and their activation maps.

    ``vis`` is (K, 3, H, W), one visualization per feature, in the order of ``features``;
    ``captions`` (one per feature, e.g. its quality scores) go under the feature's title.
    """
    from vitviz_core.data import class_name
    from vitviz_core.evaluate.exemplars import activation_maps, find_exemplars

    found = find_exemplars(loaded, None, hooks=[hook], k=k, stats=("mean",), keep_maps=False,
                           data_name=pool, data_root=pool_root, max_images=pool_images,
                           progress=progress)
    to_pixels = loaded.pixel_transform()
    rows = []
    for i, f in enumerate(features):
        top = found.top(hook, f, "mean")
        images = [to_pixels(img) for img in found.images(hook, f, "mean")]     # k x (3, H, W)
        x = torch.stack([loaded.normalize(img[None])[0] for img in images])     # (k, 3, H, W)
        maps = activation_maps(loaded, x.to(next(loaded.model.parameters()).device), hook, f)
        rows.append({
            "vis": vis[i], "exemplars": images,
            "title": f"{hook.split('.hook')[0]} #{f}" + (
                f"\n{captions[i].removeprefix(f'#{f}: ')}" if captions is not None else ""),
            "maps": maps.cpu(),
            "exemplar_labels": [f"{class_name(found.labels[j])} ({v:.2f})" if found.labels else f"{v:.2f}"
                                for j, v in top],
        })
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
    """

    def __init__(self, models: dict[str, Any], pool: str = "imagenet-sample-1000", *, pool_root: Any = None,
                 pool_images: int | None = None, hook_template: str = "blocks.{i}.mlp.hook_post",
                 steps: int = 100, n_augment: int = 4, k: int = 4,
                 default: tuple[str, int, int] | None = None, seed: int = 0, recipe: str = "paper") -> None:
        if not models:
            raise ValueError("FeatureExplorer needs at least one model")
        self.models = dict(models)
        self.pool = dict(pool=pool, pool_root=pool_root, pool_images=pool_images)
        self.hook_template = hook_template
        self.steps, self.n_augment, self.k, self.seed, self.recipe = steps, n_augment, k, seed, recipe
        first = next(iter(self.models))
        self.default = default or (first, self._depth(first) // 2, 0)
        self._widget = None

    def _depth(self, name: str) -> int:
        return len(self.models[name].model.blocks)

    def render(self, model_name: str, layer: int, feature: int, progress: bool = False) -> Figure:
        """The figure for one selection (optimizes the feature, searches its exemplars)."""
        from vitviz_core.optimize import optimize_features

        loaded = self.models[model_name]
        hook = self.hook_template.format(i=layer)
        res = optimize_features(loaded, hook, [feature], recipe=self.recipe, steps=self.steps,
                                n_augment=self.n_augment, seed=self.seed, progress=progress)
        rows = exemplar_rows(loaded, hook, [feature], res.images, k=self.k, **self.pool)
        rows[0]["title"] = f"{model_name} {rows[0]['title']}"
        return feature_panel(rows)

    def default_figure(self) -> Figure:
        """The default selection as a plain figure (what the static book page shows)."""
        return self.render(*self.default)

    def widget(self):
        """The ipywidgets box; building it needs a live kernel to be useful."""
        import ipywidgets as w
        from IPython.display import display

        name0, layer0, feat0 = self.default
        model = w.Dropdown(options=list(self.models), value=name0, description="model")
        layer = w.IntSlider(value=layer0, min=0, max=self._depth(name0) - 1, description="layer")
        feature = w.BoundedIntText(value=feat0, min=0, max=self._channels(name0, layer0) - 1,
                                   description="feature")
        button = w.Button(description="Render", button_style="primary")
        out = w.Output()

        def on_model(change: dict) -> None:
            layer.max = self._depth(change["new"]) - 1
            feature.max = self._channels(change["new"], layer.value) - 1

        def on_click(_: Any) -> None:
            out.clear_output(wait=True)
            with out:
                display(self.render(model.value, layer.value, feature.value, progress=True))

        model.observe(on_model, names="value")
        button.on_click(on_click)
        box = _ExplorerBox([w.HBox([model, layer, feature, button]), out])
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
