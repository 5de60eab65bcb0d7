"""Robust image reading: any file PIL can open becomes an upright 8-bit RGB image.

:func:`load_image` is the one place vitviz decodes image files. It handles what real
folders contain, not just clean RGB JPEGs:

- EXIF orientation is applied (``ImageOps.exif_transpose``), so phone photos stand upright.
- Grayscale (``1``, ``L``) is replicated to RGB. High bit depth grayscale (``I;16``, ``I``,
  ``F``) is *scaled* to 0..255 (16-bit values are divided by 257, never clipped).
- ``CMYK``, ``YCbCr``, ``RGBX`` ... are converted with PIL's ``convert("RGB")`` (the
  same conversion torchvision's ImageFolder uses, so pixels match how models were trained).
- Transparency (``RGBA``, ``LA``, ``PA``, palette or single-colour ``transparency``) is
  composited onto a background colour (white by default) instead of dropping the alpha
  channel, which would reveal arbitrary colours hidden under transparent pixels.
- Very large images (more than :data:`MAX_PIXELS`) are downscaled to that many pixels with
  a warning instead of failing with PIL's ``DecompressionBombError``; JPEGs are decoded at
  a reduced scale (``draft``) so the full-size image never sits in memory. Images that
  would need more than ``DECODE_LIMIT_FACTOR * MAX_PIXELS`` decoded pixels are refused.
- Truncated or corrupt files raise :class:`~vitviz_core.errors.DataError` naming the file
  (``on_error="raise"``), or warn with an :class:`ImageReadWarning` naming the file and
  return ``None`` (``on_error="warn"``; ``"ignore"`` returns ``None`` silently).

PIL's ``LOAD_TRUNCATED_IMAGES`` is never changed: a truncated file is an error, not a
half-gray image.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import DataError

__all__ = [
    "MAX_PIXELS",
    "DECODE_LIMIT_FACTOR",
    "ImageReadWarning",
    "ImageSource",
    "load_image",
    "to_rgb",
    "to_tensor01",
]

#: Images with more pixels than this are downscaled (aspect ratio kept) with a warning.
MAX_PIXELS: int = 50_000_000
#: Refuse to decode images that need more than this many times ``MAX_PIXELS`` pixels in
#: memory (after JPEG draft-mode reduction): a decompression bomb, not a photo.
DECODE_LIMIT_FACTOR: int = 8
#: Modes whose single channel holds more than 8 bits and needs scaling, not clipping.
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_OPEN_LOCK = threading.Lock()

ImageSource = Union[str, os.PathLike, IO[bytes], Image.Image]


class ImageReadWarning(UserWarning):
    """An image file could not be read (or had to be downscaled); the message names it."""


class _ReadError(Exception):
    """Internal: why a file could not be read (turned into DataError or a warning)."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source))
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return str(getattr(source, "name", repr(source)))


def _open_unchecked(source: str | os.PathLike | IO[bytes]) -> Image.Image:
    """``Image.open`` without PIL's decompression-bomb check (we apply our own limit).

    The header is parsed while PIL's global limit is lifted under a lock; the pixels
    are decoded later, after :func:`load_image` has checked the size itself.
    """
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High bit depth single-channel pixels -> uint8 by scaling (never clipping)."""
    arr = arr.astype(np.float64)
    if mode.startswith("I;16"):
        out = arr / 257.0  # 65535 -> 255 exactly
    else:
        finite = arr[np.isfinite(arr)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = arr * 255.0  # float image in [0, 1]
        elif lo >= 0.0 and hi <= 255.0:
            out = arr  # 32-bit container holding 8-bit values
        elif lo >= 0.0 and hi <= 65535.0:
            out = arr / 257.0  # 16-bit values (e.g. a 16-bit PNG opened as "I")
        else:
            out = (arr - lo) / max(hi - lo, 1e-12) * 255.0  # arbitrary range: stretch
        out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)  # clip only guards rounding


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to a new 8-bit ``RGB`` image (see the module docstring)."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        gray = _scale_to_uint8(np.asarray(img), mode)  # (H, W) uint8
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in _ALPHA_MODES or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()
    try:
        return img.convert("RGB")
    except ValueError as exc:  # e.g. LAB without a colour-management conversion
        raise _ReadError(f"unsupported image mode {mode!r} ({exc})") from exc


def _decode(source: ImageSource, max_pixels: int, background: tuple[int, int, int]) -> Image.Image:
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            img = _open_unchecked(source)
        except FileNotFoundError as exc:
            raise _ReadError("no such file") from exc
        except Image.UnidentifiedImageError as exc:
            raise _ReadError("not an image PIL can identify (empty, truncated or another format)") from exc
    try:
        width, height = img.size
        target_scale = 1.0
        if width * height > max_pixels:
            target_scale = math.sqrt(max_pixels / (width * height))
            if getattr(img, "format", None) == "JPEG":
                # decode at 1/2, 1/4 or 1/8 scale (still >= the target size)
                img.draft(img.mode, (max(1, int(width * target_scale)), max(1, int(height * target_scale))))
            decoded = img.size[0] * img.size[1]
            if decoded > DECODE_LIMIT_FACTOR * max_pixels:
                raise _ReadError(
                    f"{width}x{height} pixels is too large to decode safely "
                    f"(limit {DECODE_LIMIT_FACTOR * max_pixels} pixels; a decompression bomb?)"
                )
        img.load()
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # corrupt EXIF must not make a readable image unreadable
            upright = img
        if upright is None:
            upright = img
        if upright is not img and upright.mode == "RGB" and upright.info.get("transparency") is None:
            rgb = upright  # exif_transpose already returned a new image: skip one copy
        else:
            rgb = to_rgb(upright, background)
        if rgb.size[0] * rgb.size[1] > max_pixels:
            scale = math.sqrt(max_pixels / (rgb.size[0] * rgb.size[1]))
            new_size = (max(1, int(rgb.size[0] * scale)), max(1, int(rgb.size[1] * scale)))
            rgb = rgb.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        if target_scale < 1.0:
            warnings.warn(
                f"{_describe(source)}: {width}x{height} image has more than {max_pixels} pixels; "
                f"downscaled to {rgb.size[0]}x{rgb.size[1]}",
                ImageReadWarning,
                stacklevel=4,
            )
        return rgb
    except _ReadError:
        raise
    except Exception as exc:  # truncated data, broken streams, plugin errors...
        raise _ReadError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if img is not source:
            img.close()


def load_image(
    path: ImageSource,
    on_error: str = "raise",
    *,
    max_pixels: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image | None:
    """Read an image file as an upright 8-bit RGB PIL image.

    Args:
        path: a file path, a binary file object, or a PIL image (only converted).
        on_error: ``"raise"`` -> :class:`DataError` naming the file; ``"warn"`` -> an
            :class:`ImageReadWarning` naming the file and ``None``; ``"ignore"`` -> ``None``.
        max_pixels: downscale limit (default: the module constant :data:`MAX_PIXELS`).
        background: RGB colour that transparent pixels are composited onto.

    Returns:
        A new ``RGB`` image, or ``None`` when unreadable and ``on_error`` is not ``"raise"``.
    """
    if on_error not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'ignore', not {on_error!r}")
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        return _decode(path, limit, tuple(background))
    except _ReadError as exc:
        message = f"cannot read image {_describe(path)}: {exc}"
        if on_error == "raise":
            raise DataError(message + " (remove or replace the file, or read with on_error='warn' to skip it)") from None
        if on_error == "warn":
            warnings.warn(message + "; skipped", ImageReadWarning, stacklevel=2)
        return None


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (3, H, W) in [0, 1] (RGB conversion applied if needed)."""
    if img.mode != "RGB":
        img = to_rgb(img)
    arr = np.array(img, dtype=np.uint8, copy=True)  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
