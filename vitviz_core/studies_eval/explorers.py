"""Interactive explorers of the token-mixing and masking chapters (ipywidgets), each with a
static default figure for the rendered book.

A Render click runs forward passes only (no optimization, well under a second per image on
CPU), so nothing is cached; the status line says when a render runs and how long it took,
and the figure goes into the output as a PNG (:func:`vitviz_core.explorer.run_into_output`).
A widget's ``controls`` attribute maps control names to its widgets."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.evaluate.common import model_device
from vitviz_core.explorer import run_into_output
from vitviz_core.models import as_loaded
from vitviz_core.plot.images import to_hwc, upsample


def _class(label: int) -> str:
    from vitviz_core.data import class_name

    try:
        return class_name(int(label))
    except Exception:  # noqa: BLE001 - unlabelled / out of range
        return "?"


def _top_text(logits: Tensor, label: int, n: int = 3) -> str:
    """``"class 0.82 ✓"`` lines of the top-``n`` predictions of one image ``(K,)``."""
    p = logits.float().softmax(-1)
    vals, idx = p.topk(n)
    return "\n".join(
        f"{'✓' if int(i) == label else ' '} {_class(int(i))[:20]:20s} {float(v):.2f}"
        for v, i in zip(vals, idx)
    )


def prediction_figure(
    panels: Sequence[Mapping[str, Any]],
    cell_inches: float = 2.4,
    fontsize: float = 7.5,
    cols: int | None = None,
) -> Figure:
    """Panels in rows of ``cols`` (default: one row). Each is a dict with ``title`` and either
    ``image`` ((3, H, W) in [0, 1], optional ``map`` (h, w) overlaid) or ``text`` (monospace
    lines)."""
    ncol = max(1, min(int(cols or len(panels)), len(panels)))
    nrow = -(-len(panels) // ncol)
    fig = Figure(figsize=(ncol * cell_inches, nrow * (cell_inches + 0.35) + 0.55))
    axes = fig.subplots(nrow, ncol, squeeze=False).reshape(-1)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax, p in zip(axes, panels):
        ax.set_axis_off()
        if p.get("image") is not None:
            img = to_hwc(p["image"])
            ax.imshow(img)
            if p.get("map") is not None:
                m = upsample(torch.as_tensor(p["map"]), img.shape[:2])
                ax.imshow(
                    m,
                    cmap=p.get("cmap", "viridis"),
                    alpha=0.6,
                    vmin=0,
                    vmax=max(float(p.get("vmax", m.max())), 1e-6),
                )
        if p.get("text"):
            ax.text(
                0.0,
                1.0,
                p["text"],
                family="monospace",
                fontsize=fontsize - 0.5,
                va="top",
                ha="left",
                transform=ax.transAxes,
            )
        ax.set_title(p.get("title", ""), fontsize=fontsize)
    if nrow == 1:
        fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.06)
    else:
        fig.subplots_adjust(left=0.01, right=0.99, top=0.94, bottom=0.01, wspace=0.06, hspace=0.15)
    return fig


def _controls(children: list) -> Any:
    """A row of controls that wraps onto a second line instead of overflowing its box."""
    import ipywidgets as w

    return w.HBox(children, layout=w.Layout(flex_flow="row wrap", width="100%", max_width="100%"))


def _status() -> Any:
    """The one-line status under an explorer's controls (what runs, how long it took)."""
    import ipywidgets as w

    return w.Label(
        value="choose a selection and press Render", layout=w.Layout(width="100%", overflow="hidden")
    )


def _explorer_box(children: list) -> Any:
    import ipywidgets as w

    class ExplorerBox(w.VBox):
        """A VBox whose plain-text form (what a static page shows) explains itself."""

        def __repr__(self) -> str:
            return "[interactive explorer: open this chapter in Jupyter to change the selection]"

    return ExplorerBox(children, layout=w.Layout(width="100%", max_width="100%", overflow="hidden"))


class TokenMixingExplorer:
    """Pick an image and a layer ``L``: predictions of the normal pass, with CLS isolated in
    blocks ``[0, L)``, and with the patches dropped from block ``L``, beside the classifier
    head's probability of the true class on every patch token.

    Args:
        model: a class-token ViT LoadedModel; ``pixels``: items ``(x01, label, index)`` in its
        pixel view; ``probe``: optional head for headless backbones; ``default``: (index, L).
    """

    def __init__(
        self, model: Any, pixels: Any, probe: Any = None, default: tuple[int, int] | None = None
    ) -> None:
        from vitviz_core.evaluate.token_mixing import check_vit

        self.model, self.pixels, self.probe = model, pixels, probe
        self.depth = len(check_vit(model).blocks)
        self.default = default or (0, self.depth - 1)

    def render(self, index: int, layer: int) -> Figure:
        from vitviz_core.evaluate.token_mixing import token_mixing_batch

        x01, label, _ = self.pixels[int(index)]
        module = getattr(self.model, "model", self.model)
        heads = (
            {}
            if self.probe is None
            else {"head": self.probe.head_for(module), "token_head": self.probe.token_head}
        )
        dev = model_device(self.model)
        with torch.inference_mode():
            out = token_mixing_batch(
                self.model,
                self.model.normalize(x01[None]).to(dev),
                [0, layer],
                [layer],
                patch_head=True,
                **heads,
            )
        patch = out["patch"][0].float().softmax(-1)  # (N, K)
        n = patch.shape[0]
        g = int(round(math.sqrt(n)))
        pmap = patch[:, int(label)].reshape(g, n // g).cpu() if label >= 0 else torch.zeros(g, n // g)
        text = (
            f"natural\n{_top_text(out['natural'][0], int(label))}\n\n"
            f"CLS isolated in [0, {layer})\n{_top_text(out['isolate'][layer][0], int(label))}\n\n"
            f"patches dropped from {layer}\n{_top_text(out['drop'][layer][0], int(label))}"
        )
        return prediction_figure(
            [
                {"image": x01, "title": f"#{index}: {_class(int(label))[:24]}"},
                {"image": x01, "map": pmap, "vmax": 1.0, "title": "head on each patch: p(true class)"},
                {"text": text, "title": "top-3 predictions (✓ = true class)"},
            ],
            cell_inches=2.6,
        )

    def default_figure(self) -> Figure:
        return self.render(*self.default)

    def widget(self) -> Any:
        import ipywidgets as w

        idx = w.BoundedIntText(value=self.default[0], min=0, max=len(self.pixels) - 1, description="image")
        layer = w.IntSlider(value=self.default[1], min=0, max=self.depth, description="L")
        button = w.Button(description="Render", button_style="primary")
        status, out = _status(), w.Output()

        def on_click(_: Any) -> None:
            run_into_output(
                out,
                lambda: self.render(idx.value, layer.value),
                status=status,
                controls=[idx, layer, button],
                busy="running the model...",
            )

        button.on_click(on_click)
        box = _explorer_box([_controls([idx, layer, button]), status, out])
        box.controls = dict(image=idx, layer=layer, button=button, status=status, output=out)
        return box


class MaskingExplorer:
    """Pick an image, a fill and a low-pass cut-off: the full, foreground-only,
    background-only and low-passed versions with each model's top prediction.

    All models see the first model's pixel view (for the page; the tables use each model's
    own view). ``fg_view`` is the foreground probability in that view ``(N, H, W)``.
    """

    def __init__(
        self,
        models: Mapping[str, Any],
        pixels: Any,
        fg_view: Tensor,
        threshold: float = 0.5,
        default: tuple[int, str, float] | None = None,
    ) -> None:
        self.models, self.pixels, self.fg_view, self.threshold = dict(models), pixels, fg_view, threshold
        self.default = default or (0, "black", 16.0)

    def render(self, index: int, fill: str, cutoff: float) -> Figure:
        from vitviz_core.evaluate.frequency import low_pass
        from vitviz_core.evaluate.masking import apply_mask, saliency_to_mask

        x01, label, _ = self.pixels[int(index)]
        x = x01[None]  # (1, 3, H, W)
        keep = saliency_to_mask(self.fg_view[int(index)][None], self.threshold, "box")  # (1, H, W)
        views = {
            "full": x,
            "foreground only": apply_mask(x, keep, fill),
            "background only": apply_mask(x, ~keep, fill),
            f"low-pass {cutoff:g}": low_pass(x, float(cutoff)).clamp(0, 1),
        }
        panels = []
        for name, v in views.items():
            lines = []
            for mname, m in self.models.items():
                lm = as_loaded(m)
                with torch.inference_mode():
                    logits = lm.model(lm.normalize(v).to(model_device(m)))[0]
                p = logits.float().softmax(-1)
                top = int(p.argmax())
                lines.append(
                    f"{mname[:14]}: {'✓' if top == int(label) else '✗'} {_class(top)[:16]} {float(p[top]):.2f}"
                )
            panels.append({"image": v[0], "title": name + "\n" + "\n".join(lines)})
        fig = prediction_figure(panels, cell_inches=2.0, fontsize=7)
        fig.suptitle(f"#{index}: true class {_class(int(label))}", fontsize=8, y=0.995)
        fig.subplots_adjust(top=0.72)
        return fig

    def default_figure(self) -> Figure:
        return self.render(*self.default)

    def widget(self) -> Any:
        import ipywidgets as w

        idx = w.BoundedIntText(value=self.default[0], min=0, max=len(self.pixels) - 1, description="image")
        fill = w.Dropdown(
            options=["black", "dataset_mean", "blur"], value=self.default[1], description="fill"
        )
        cut = w.FloatLogSlider(value=self.default[2], base=2, min=0, max=7, description="cut-off")
        button = w.Button(description="Render", button_style="primary")
        status, out = _status(), w.Output()

        def on_click(_: Any) -> None:
            run_into_output(
                out,
                lambda: self.render(idx.value, fill.value, cut.value),
                status=status,
                controls=[idx, fill, cut, button],
                busy="running the models...",
            )

        button.on_click(on_click)
        box = _explorer_box([_controls([idx, fill, cut, button]), status, out])
        box.controls = dict(image=idx, fill=fill, cutoff=cut, button=button, status=status, output=out)
        return box
