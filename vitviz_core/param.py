"""Image parametrizations: what the optimizer changes to make an image.

:func:`vitviz_core.optimize.optimize_features` optimizes a parameter tensor and turns it
into an image in [0, 1] each step (``to_image``); a parametrization decides how. Three:

- :class:`PixelParam` (``"pixel"``): the pixels themselves, ``U(0, 1)`` init, clamped to
  ``[lo, hi]`` after every step. The paper's (Ghiasi et al. 2022, Appendix B); with it the
  ``paper`` and ``released`` recipes are bit-exact to what they were before this module.
- :class:`FourierParam` (``"fourier"``): a complex spectrum per colour channel, scaled by
  ``1 / f^decay`` so that Adam's equal steps give natural 1/f images; the three channels are
  decorrelated colours (recorrelated by the ImageNet colour-correlation square root) and a
  sigmoid maps them into [0, 1] (Olah et al. 2017, as in lucid / lucent).
- :class:`MacoParam` (``"maco"``): magnitude-constrained optimization (Fel et al. 2023,
  "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
  Optimization"): the amplitude spectrum is fixed to the mean spectrum of natural images
  (:func:`natural_spectrum`, computed from the offline image data) and only the phase is
  optimized.

A parametrization is any object with ``init(n, size, generator, device)``, ``to_image(params)``
and ``post_step(params)`` (the :class:`Parametrization` protocol); pass one as ``param=``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from vitviz_core.errors import VitvizError

__all__ = [
    "Parametrization",
    "PixelParam",
    "FourierParam",
    "MacoParam",
    "PARAMS",
    "get_param",
    "COLOR_CORRELATION",
    "recorrelate",
    "decorrelate",
    "natural_images",
    "natural_spectrum",
    "spectrum_scale",
]

logger = logging.getLogger(__name__)

#: Square root of the ImageNet RGB colour covariance (lucid / lucent), columns normalised so
#: that the largest has norm 1: a decorrelated colour vector ``c`` is the RGB vector ``C @ c``.
_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = torch.from_numpy(_SVD_SQRT / np.max(np.linalg.norm(_SVD_SQRT, axis=0)))  # (3, 3)


def recorrelate(x: Tensor) -> Tensor:
    """Decorrelated colour channels -> RGB directions: ``C @ x`` per pixel of (B, 3, H, W)."""
    c = COLOR_CORRELATION.to(x.device, x.dtype)
    return torch.einsum("ij,bjhw->bihw", c, x)  # (B, 3, H, W)


def decorrelate(x: Tensor) -> Tensor:
    """Inverse of :func:`recorrelate`: ``C^-1 @ x`` per pixel of (B, 3, H, W)."""
    c_inv = torch.linalg.inv(COLOR_CORRELATION.double()).to(x.device, x.dtype)
    return torch.einsum("ij,bjhw->bihw", c_inv, x)  # (B, 3, H, W)


def _freqs(h: int, w: int) -> Tensor:
    """Radial frequency (cycles per pixel) of every rfft2 bin -> (H, W // 2 + 1)."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    return torch.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> Tensor:
    """lucid's ``1 / max(f, 1/max(h, w)) ** decay_power`` per rfft2 bin -> (H, W // 2 + 1)."""
    return 1.0 / _freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay_power


@runtime_checkable
class Parametrization(Protocol):
    """How a parameter tensor becomes an image. ``init`` draws one stream's ``n`` images
    from ``generator`` (so batching features does not change any feature's numbers)."""

    name: str

    def init(
        self, n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device
    ) -> Tensor: ...

    def to_image(self, params: Tensor) -> Tensor: ...

    def post_step(self, params: Tensor) -> None: ...


class PixelParam:
    """The pixels themselves: ``U(0, 1)`` init, identity, clamp to ``clamp`` after each step."""

    name = "pixel"

    def __init__(self, clamp: tuple[float, float] = (0.0, 1.0)) -> None:
        self.lo, self.hi = float(clamp[0]), float(clamp[1])

    def init(self, n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.rand(n, 3, size[0], size[1], generator=generator, device=device)  # (n, 3, H, W)

    def to_image(self, params: Tensor) -> Tensor:
        return params  # the very tensor: the pixel recipes stay bit-exact

    def post_step(self, params: Tensor) -> None:
        with torch.no_grad():
            params.clamp_(self.lo, self.hi)


class FourierParam:
    """lucid's Fourier parametrization with decorrelated colour.

    ``params`` (n, 3, H, W//2+1, 2) are the real and imaginary parts of a spectrum; the image
    is ``sigmoid(recorrelate(irfft2(spectrum * scale) * gain))`` with ``scale`` =
    :func:`spectrum_scale`. A zero spectrum gives mid-grey (0.5).

    Args:
        decay_power: the ``1/f`` exponent of the scale (lucid: 1).
        init_std: standard deviation of the initial spectrum (lucid: 0.01).
        gain: multiplies the spatial signal before the sigmoid (lucid: 1/4 with
            ``norm="ortho"``).
    """

    name = "fourier"

    def __init__(self, decay_power: float = 1.0, init_std: float = 0.01, gain: float = 0.25) -> None:
        self.decay_power = float(decay_power)
        self.init_std = float(init_std)
        self.gain = float(gain)
        self._scale: dict[tuple, Tensor] = {}

    def init(self, n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> Tensor:
        h, w = size
        self.size = (h, w)
        return torch.randn(n, 3, h, w // 2 + 1, 2, generator=generator, device=device) * self.init_std

    def _scale_for(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, str(device))
        if key not in self._scale:
            self._scale[key] = spectrum_scale(h, w, self.decay_power).to(device)  # (H, W//2+1)
        return self._scale[key]

    def spatial(self, params: Tensor) -> Tensor:
        """The decorrelated spatial signal before colour and sigmoid -> (n, 3, H, W)."""
        h = params.shape[2]
        w = getattr(self, "size", (h, 2 * (params.shape[3] - 1)))[1]
        spec = torch.view_as_complex(params.contiguous()) * self._scale_for(h, w, params.device)
        return torch.fft.irfft2(spec, s=(h, w), norm="ortho") * self.gain  # (n, 3, H, W)

    def to_image(self, params: Tensor) -> Tensor:
        return torch.sigmoid(recorrelate(self.spatial(params)))  # (n, 3, H, W) in (0, 1)

    def post_step(self, params: Tensor) -> None:
        return None


class MacoParam:
    """Magnitude-constrained optimization: a fixed natural amplitude spectrum, optimized phase.

    ``params`` (n, 3, H, W//2+1) are phases; the image is
    ``sigmoid(contrast * recorrelate(standardize(irfft2(magnitude * exp(i * phase)))))``, with
    ``magnitude`` (3, H, W//2+1) from :func:`natural_spectrum` (or given) and ``standardize``
    per image and channel (zero mean, unit variance), so the amplitude spectrum of every image's
    decorrelated signal is ``magnitude`` up to one factor per channel, whatever the phase.

    Args:
        magnitude: fixed amplitude spectrum; default: computed from the image data on the first
            ``init`` at that size.
        init_std: standard deviation of the initial phase (Fel et al.: 1).
        contrast: multiplies the standardized signal before the sigmoid.
    """

    name = "maco"

    def __init__(
        self,
        magnitude: Tensor | None = None,
        init_std: float = 1.0,
        contrast: float = 1.0,
        n_images: int = 256,
    ) -> None:
        self.magnitude = None if magnitude is None else magnitude.detach().float()
        self.init_std = float(init_std)
        self.contrast = float(contrast)
        self.n_images = int(n_images)
        self.size: tuple[int, int] | None = None

    def init(self, n: int, size: tuple[int, int], generator: torch.Generator, device: torch.device) -> Tensor:
        h, w = size
        if self.magnitude is None or self.size != (h, w):
            if self.magnitude is None or tuple(self.magnitude.shape[-2:]) != (h, w // 2 + 1):
                self.magnitude = natural_spectrum((h, w), n_images=self.n_images)
            self.size = (h, w)
        self.magnitude = self.magnitude.to(device)
        return torch.randn(n, 3, h, w // 2 + 1, generator=generator, device=device) * self.init_std

    def spatial(self, params: Tensor) -> Tensor:
        """The standardized decorrelated signal before colour and sigmoid -> (n, 3, H, W)."""
        if self.magnitude is None or self.size is None:
            raise VitvizError("MacoParam.init must run before to_image")
        mag = self.magnitude.to(params.device, params.dtype)  # (3, H, W//2+1)
        spec = torch.polar(mag.expand_as(params), params)  # (n, 3, H, W//2+1)
        x = torch.fft.irfft2(spec, s=self.size, norm="ortho")  # (n, 3, H, W)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        return x / (x.std(dim=(2, 3), keepdim=True) + 1e-6)

    def to_image(self, params: Tensor) -> Tensor:
        return torch.sigmoid(self.contrast * recorrelate(self.spatial(params)))  # (n, 3, H, W)

    def post_step(self, params: Tensor) -> None:
        return None


PARAMS = {"pixel": PixelParam, "fourier": FourierParam, "maco": MacoParam}


def get_param(param: "str | Parametrization", **options: float) -> Parametrization:
    """A parametrization by name (``pixel``, ``fourier``, ``maco``) with constructor options,
    or the object given."""
    if not isinstance(param, str):
        if not isinstance(param, Parametrization):
            raise VitvizError(
                f"param must be one of {sorted(PARAMS)} or an object with init/to_image/post_step, "
                f"got {type(param).__name__}"
            )
        return param
    if param not in PARAMS:
        raise VitvizError(f"unknown parametrization {param!r}; choose one of {sorted(PARAMS)}")
    return PARAMS[param](**options)


# ---------------------------------------------------------------------------------------------
# natural images from the offline data
# ---------------------------------------------------------------------------------------------


def natural_images(
    n: int = 256,
    size: tuple[int, int] = (224, 224),
    data_name: str = "imagenet-sample-1000",
    data_root: str | Path | None = None,
) -> Tensor:
    """``n`` images of ``data_name`` spread evenly over it, resized (shorter side) and
    center-cropped to ``size`` -> (n, 3, H, W) in [0, 1]. Raises :class:`VitvizError` when
    the data is not here."""
    from PIL import Image

    from vitviz_core.data import IMAGE_EXTENSIONS, find_dataset

    root = find_dataset(data_name, data_root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise VitvizError(f"no images under {root}")
    pick = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(n, len(files)))]
    h, w = size
    out = []
    for path in pick:
        with Image.open(path) as img:
            img = img.convert("RGB")
            s = max(h / img.height, w / img.width)
            img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.BICUBIC)
            left, top = (img.width - w) // 2, (img.height - h) // 2
            arr = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(out)  # (n, 3, H, W)


def natural_spectrum(
    size: tuple[int, int] = (224, 224),
    n_images: int = 256,
    data_name: str = "imagenet-sample-1000",
    data_root: str | Path | None = None,
    cache: bool = True,
) -> Tensor:
    """Mean amplitude spectrum of natural images in decorrelated colour -> (3, H, W//2+1).

    Each image (:func:`natural_images`) is decorrelated (:func:`decorrelate`), centred per
    channel and transformed with ``rfft2(norm="ortho")``; the amplitudes are averaged.
    Cached as ``.npy`` under ``cache_dir()/spectra``.
    """
    from vitviz_core import config

    h, w = size
    key = hashlib.sha256(f"{data_name}|{data_root}|{h}x{w}|{n_images}|v1".encode()).hexdigest()[:16]
    path = config.cache_dir() / "spectra" / f"magnitude-{key}.npy"
    if cache and path.is_file():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    imgs = natural_images(n_images, size, data_name, data_root)  # (n, 3, H, W)
    x = decorrelate(imgs)
    x = x - x.mean(dim=(2, 3), keepdim=True)
    mag = torch.fft.rfft2(x, norm="ortho").abs().mean(dim=0)  # (3, H, W//2+1)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, mag.numpy().astype(np.float32), allow_pickle=False)
    logger.info("natural amplitude spectrum from %d images of %s at %dx%d", len(imgs), data_name, h, w)
    return mag
