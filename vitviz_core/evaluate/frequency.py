"""Frequency robustness (paper Fig. 16): radial FFT low-pass / high-pass filters and
accuracy-versus-cut-off curves.

Filters act in pixel space (values in [0, 1]) per channel, before the model's own
normalisation. The cut-off is a radius in *cycles per image* on the centred 2-D frequency
grid: frequency ``(fy, fx)`` with integer ``fy in [-H/2, H/2)``, ``fx in [-W/2, W/2)``
has radius ``sqrt(fy^2 + fx^2)``.

- ``low_pass(x, c)`` keeps radius ``<= c``: ``c = 0`` leaves only the mean colour of each
  channel, ``c >= max_radius(H, W)`` (or ``inf``) returns ``x`` unchanged.
- ``high_pass(x, c)`` keeps radius ``> c`` (the exact complement: ``low + high = x``);
  with ``keep_dc=True`` (default) the mean colour is added back so the image stays
  centred where the original was; ``high_pass(x, 0, keep_dc=True) == x``.

Two filter shapes (``window``):

- ``"ideal"`` (default): a hard 0/1 cut at the radius. Sharp in frequency, so it rings in
  space (halos parallel to edges).
- ``"gaussian"``: the smooth gain ``2 ** -((r / c) ** 2)`` — 1 at the mean colour, exactly
  1/2 at the cut-off radius ``c``, falling off smoothly (no ringing: a Gaussian's inverse
  transform is positive). Its high-pass is the complement ``x - low_pass(x)`` (+ mean).

Which shape the paper's Fig. 16 used is not stated in the text we could check, and the
authors' released code does not implement the experiment; the chapters show both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.records import ResultRecord
from vitviz_core.evaluate.stats import Estimate, accuracy_with_ci

__all__ = [
    "radial_frequency",
    "max_radius",
    "frequency_mask",
    "frequency_gain",
    "low_pass",
    "high_pass",
    "WINDOWS",
    "FrequencyResult",
    "frequency_sweep",
    "DEFAULT_CUTOFFS",
]

#: Default cut-offs (cycles per image) of the sweep; ``inf`` = unfiltered.
DEFAULT_CUTOFFS: tuple[float, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, math.inf)


def radial_frequency(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """Radius (cycles per image) of every bin of ``torch.fft.rfft2`` output: ``(H, W//2+1)``."""
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=device)  # (H,) integers
    fx = torch.fft.rfftfreq(w, d=1.0 / w, device=device)  # (W//2+1,)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # (H, W//2+1)


def max_radius(h: int, w: int) -> float:
    """The largest radius present in an ``H x W`` image's spectrum."""
    return float(radial_frequency(h, w).max())


def frequency_mask(
    h: int, w: int, cutoff: float, kind: str = "low", device: torch.device | str | None = None
) -> Tensor:
    """Boolean pass mask on the rfft2 grid ``(H, W//2+1)``: ``low`` keeps radius <= cutoff,
    ``high`` keeps radius > cutoff."""
    r = radial_frequency(h, w, device)
    if kind == "low":
        return r <= cutoff
    if kind == "high":
        return r > cutoff
    raise VitvizError(f"unknown filter kind {kind!r}: use 'low' or 'high'")


#: Filter shapes: ``ideal`` (hard cut) and ``gaussian`` (gain 1/2 at the cut-off).
WINDOWS: tuple[str, ...] = ("ideal", "gaussian")


def frequency_gain(
    h: int,
    w: int,
    cutoff: float,
    kind: str = "low",
    window: str = "ideal",
    device: torch.device | str | None = None,
) -> Tensor:
    """Real gain on the rfft2 grid ``(H, W//2+1)``: the ideal 0/1 mask, or the Gaussian
    ``2 ** -((r / cutoff) ** 2)`` (low) and ``1 - that`` (high)."""
    if window == "ideal":
        return frequency_mask(h, w, cutoff, kind, device).float()
    if window != "gaussian":
        raise VitvizError(f"unknown filter window {window!r}: use one of {WINDOWS}")
    if kind not in ("low", "high"):
        raise VitvizError(f"unknown filter kind {kind!r}: use 'low' or 'high'")
    r = radial_frequency(h, w, device)  # (H, W//2+1)
    if cutoff <= 0:
        low = (r == 0).float()
    elif math.isinf(cutoff):
        low = torch.ones_like(r)
    else:
        low = torch.exp2(-((r / cutoff) ** 2))
    return low if kind == "low" else 1.0 - low


def _filter(x: Tensor, cutoff: float, kind: str, window: str = "ideal") -> Tensor:
    if x.dim() < 2:
        raise VitvizError(f"frequency filters need an image tensor (..., H, W), got shape {tuple(x.shape)}")
    if cutoff != cutoff:  # NaN
        raise VitvizError("frequency cut-off is NaN")
    h, w = x.shape[-2:]
    gain = frequency_gain(h, w, cutoff, kind, window, device=x.device)  # (H, W//2+1)
    spec = torch.fft.rfft2(x.float())  # (..., H, W//2+1) complex
    out = torch.fft.irfft2(spec * gain, s=(h, w))  # (..., H, W)
    return out.to(x.dtype)


def low_pass(x: Tensor, cutoff: float, clamp: bool = False, window: str = "ideal") -> Tensor:
    """Radial low-pass of images ``(..., H, W)`` (e.g. ``(B, 3, H, W)`` in [0, 1]);
    ``window`` = ``"ideal"`` or ``"gaussian"`` (see the module docstring)."""
    out = _filter(x, cutoff, "low", window)
    return out.clamp(0, 1) if clamp else out


def high_pass(
    x: Tensor, cutoff: float, keep_dc: bool = True, clamp: bool = False, window: str = "ideal"
) -> Tensor:
    """Radial high-pass (radius > cutoff, or the Gaussian complement); ``keep_dc`` adds the
    per-channel mean back."""
    out = _filter(x, cutoff, "high", window)
    if keep_dc and cutoff >= 0:
        out = out + x.float().mean(dim=(-2, -1), keepdim=True).to(out.dtype)
    return out.clamp(0, 1) if clamp else out


@dataclass
class FrequencyResult:
    """Accuracy versus cut-off for one model: views (estimates) of the per-image
    ``correctness`` (variants ``natural`` and ``<kind>@<cut-off>``)."""

    cutoffs: list[float]
    kinds: list[str]
    top1: dict[str, list[Estimate]] = field(default_factory=dict)  # kind -> one per cut-off
    top5: dict[str, list[Estimate]] = field(default_factory=dict)
    natural_top1: Estimate | None = None
    natural_top5: Estimate | None = None
    record: ResultRecord | None = None
    correctness: Any = None  # evaluate.common.Correctness (per image), when computed here

    def to_dict(self) -> dict[str, Any]:
        from vitviz_core.evaluate.records import jsonable

        return jsonable(
            {
                "cutoffs": self.cutoffs,
                "kinds": self.kinds,
                "top1": {k: [e.to_dict() for e in v] for k, v in self.top1.items()},
                "top5": {k: [e.to_dict() for e in v] for k, v in self.top5.items()},
                "natural_top1": self.natural_top1,
                "natural_top5": self.natural_top5,
                "record": self.record.to_dict() if self.record else None,
            }
        )


def _name(kind: str, c: float) -> str:
    return f"{kind}@{c:g}"


def frequency_sweep(
    model: Any,
    dataset: Any = None,
    cutoffs: Sequence[float] = DEFAULT_CUTOFFS,
    kinds: Sequence[str] = ("low",),
    data_name: str = "imagenet-val-1300",
    data_root: str | Path | None = None,
    max_images: int | None = None,
    batch_size: int = 32,
    keep_dc: bool = True,
    clamp: bool = False,
    device: str | torch.device | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> FrequencyResult:
    """Top-1/top-5 (with bootstrap CIs) of ``model`` on low/high-passed images per cut-off.

    Each batch is decoded once and filtered at every cut-off. ``dataset`` (items
    ``(x01, label, index)`` in pixel space) defaults to ``data_name`` in the model's pixel view.
    """
    from vitviz_core.evaluate.common import evaluate_variants, make_loader, pixel_dataset

    for kind in kinds:
        if kind not in ("low", "high"):
            raise VitvizError(f"unknown filter kind {kind!r}: use 'low' or 'high'")
    if dataset is None:
        dataset = pixel_dataset(model, data_name, data_root, max_images)
    cut = [float(c) for c in cutoffs]
    record = ResultRecord.start(
        "frequency_sweep",
        model,
        dataset,
        {
            "cutoffs": cut,
            "kinds": list(kinds),
            "units": "cycles per image (radius)",
            "keep_dc": keep_dc,
            "clamp": clamp,
            "batch_size": batch_size,
            "n_boot": n_boot,
            "seed": seed,
            "space": "pixel [0,1], per channel, before normalisation",
        },
    )

    def variants(x: Tensor, y: Tensor, idx: Tensor, *_: Any) -> dict[str, Tensor]:
        out = {"natural": x}
        for kind in kinds:
            for c in cut:
                out[_name(kind, c)] = (
                    low_pass(x, c, clamp=clamp)
                    if kind == "low"
                    else high_pass(x, c, keep_dc=keep_dc, clamp=clamp)
                )
        return out

    corr = evaluate_variants(
        model,
        make_loader(dataset, batch_size),
        variants,
        device=device,
        progress=progress,
        desc="frequency sweep",
    )
    ci = dict(n_boot=n_boot, seed=seed)
    res = FrequencyResult(
        cutoffs=cut,
        kinds=list(kinds),
        correctness=corr,
        natural_top1=accuracy_with_ci(corr.correct["natural"][1], **ci),
        natural_top5=accuracy_with_ci(corr.correct["natural"][5], **ci),
    )
    for kind in kinds:
        res.top1[kind] = [accuracy_with_ci(corr.correct[_name(kind, c)][1], **ci) for c in cut]
        res.top5[kind] = [accuracy_with_ci(corr.correct[_name(kind, c)][5], **ci) for c in cut]
    res.record = record.finish()
    return res
