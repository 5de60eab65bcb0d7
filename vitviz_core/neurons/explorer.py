"""The neurons chapter's explorer: pick an image, a level-0 neuron and a patch token; see
that token's *global view* (Nguyen et al. 2022) at several depths.

:func:`global_view_figure` draws one selection: every patch's level-0 view of the neuron,
weighted by the token's attention-rollout weight on that patch, per chosen block, above the
rollout weights themselves. :class:`NeuronExplorer` wraps it in an ipywidgets box in the
style of :mod:`vitviz_core.studies_eval.explorers` (a Render button, a status line, the
figure as a PNG output via :func:`vitviz_core.explorer.run_into_output`), and
:meth:`NeuronExplorer.default_figure` is the static figure the rendered book shows.
"""

from __future__ import annotations

from typing import Any, Sequence

from matplotlib.figure import Figure
from torch import Tensor

from vitviz_core.explorer import run_into_output
from vitviz_core.neurons import level0, propagation
from vitviz_core.plot.neurons import propagation_figure, stretch

__all__ = ["global_view_figure", "NeuronExplorer"]


def global_view_figure(
    x01: Tensor,
    xn: Tensor,
    weight: Tensor,
    rollouts: Sequence[Tensor],
    blocks: Sequence[int],
    image: int,
    neuron: int,
    token: int,
    grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> Figure:
    """What ``token`` (an index into the full sequence, prefix tokens included) of image
    ``image`` aggregates of neuron ``neuron``'s level-0 views at each of ``blocks``.

    Args:
        x01: ``(N, 3, H, W)`` images in [0, 1]; ``xn``: the same, normalized for the model.
        weight: ``(C, 3, p, p)`` patch-embedding filters.
        rollouts: one ``(N, L, L)`` attention rollout per block (:func:`propagation.rollout`).
        blocks: the blocks shown, one column each.
    """
    v = level0.level0_views(xn[image : image + 1], weight, neuron)  # (1, P, 3, p, p)
    rs = [rollouts[b][image : image + 1] for b in blocks]  # len(blocks) x (1, L, L)
    maps = propagation.token_view_maps(v, rs, token, grid, num_prefix_tokens)[:, 0]  # (len(blocks), 3, H, W)
    heat = propagation.aggregation_maps(rs, token, grid, num_prefix_tokens)[:, 0]  # (len(blocks), gh, gw)
    return propagation_figure(x01[image], stretch(maps), [f"block {b}" for b in blocks], heat=heat)


def _explorer_box(children: list) -> Any:
    import ipywidgets as w

    class ExplorerBox(w.VBox):
        """A VBox whose plain-text form (what a static page shows) explains itself."""

        def __repr__(self) -> str:
            return "[interactive explorer: open in Jupyter to pick image, neuron and token]"

    return ExplorerBox(children, layout=w.Layout(width="100%", max_width="100%", overflow="hidden"))


class NeuronExplorer:
    """Pick an image, a level-0 neuron and a patch token (row, column): its global view.

    Args:
        x01: ``(N, 3, H, W)`` images in [0, 1]; ``xn``: the same normalized for the model.
        weight: ``(C, 3, p, p)`` patch-embedding filters.
        rollouts: one ``(N, L, L)`` attention rollout per block.
        blocks: the blocks shown.
        grid: the patch grid ``(gh, gw)``; ``num_prefix_tokens``: CLS and the like.
        default: ``(image, neuron, row, col)`` drawn by :meth:`default_figure`.

    Rendering needs no forward pass (the rollouts are precomputed), well under a second.
    """

    def __init__(
        self,
        x01: Tensor,
        xn: Tensor,
        weight: Tensor,
        rollouts: Sequence[Tensor],
        blocks: Sequence[int],
        grid: tuple[int, int],
        num_prefix_tokens: int = 1,
        default: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        self.x01, self.xn, self.weight = x01, xn, weight
        self.rollouts, self.blocks = list(rollouts), list(blocks)
        self.grid, self.npf = tuple(grid), int(num_prefix_tokens)
        self.default = tuple(int(d) for d in default)

    def render(self, image: int, neuron: int, row: int, col: int) -> Figure:
        """The global view of the token at (``row``, ``col``) of the patch grid."""
        token = self.npf + int(row) * self.grid[1] + int(col)
        return global_view_figure(
            self.x01,
            self.xn,
            self.weight,
            self.rollouts,
            self.blocks,
            int(image),
            int(neuron),
            token,
            self.grid,
            self.npf,
        )

    def default_figure(self) -> Figure:
        """The default selection as a plain figure (what the static book page shows)."""
        return self.render(*self.default)

    def widget(self) -> Any:
        """The ipywidgets box; its ``controls`` attribute maps control names to widgets."""
        import ipywidgets as w

        from vitviz_core.studies_eval.explorers import _controls, _status

        i0, n0, r0, c0 = self.default
        image = w.IntSlider(i0, 0, self.x01.shape[0] - 1, description="image")
        neuron = w.BoundedIntText(n0, 0, self.weight.shape[0] - 1, description="neuron")
        row = w.IntSlider(r0, 0, self.grid[0] - 1, description="token row")
        col = w.IntSlider(c0, 0, self.grid[1] - 1, description="token col")
        button = w.Button(description="Render", button_style="primary")
        status, out = _status(), w.Output()
        controls = [image, neuron, row, col, button]

        def on_click(_: Any) -> None:
            run_into_output(
                out,
                lambda: self.render(image.value, neuron.value, row.value, col.value),
                status=status,
                controls=controls,
                busy="drawing...",
            )

        button.on_click(on_click)
        box = _explorer_box([_controls(controls), status, out])
        box.controls = dict(
            image=image, neuron=neuron, row=row, col=col, button=button, status=status, output=out
        )
        return box
