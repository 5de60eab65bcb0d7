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
  a warning instead of failing with PIL's ``DecompressionBombError``.
- A *decoded-pixel budget* bounds the memory one image can take: no image is decoded at
  more than :func:`decode_budget` pixels (default :data:`MAX_DECODE_PIXELS` = 32 Mpixel,
  which keeps the peak memory of one image, all conversions included, under ~1 GB; set
  ``max_decode_pixels=`` or the environment variable ``VITVIZ_MAX_DECODE_PIXELS``), nor at
  more than ``DECODE_LIMIT_FACTOR * max_pixels``. JPEGs above it are decoded at a reduced
  scale (``draft``: 1/2, 1/4 or 1/8) so the full-size image never sits in memory; other
  formats above it (a decompression bomb: a 1 MB PNG can declare 30 000 x 30 000 pixels)
  are refused *before* any pixel is decoded.
- Every failure to read one file (missing, unreadable permissions, a directory or a
  symlink loop with an image name, truncated at any offset, corrupt, a JPEG whose header
  claims more pixels than its data holds, over the budget) raises
  :class:`~vitviz_core.errors.DataError` naming the file (``on_error="raise"``), or warns
  with an :class:`ImageReadWarning` naming the file and returns ``None``
  (``on_error="warn"``; ``"ignore"`` returns ``None`` silently).

PIL's ``LOAD_TRUNCATED_IMAGES`` is never changed: a truncated file is an error, not a
half-gray image. A baseline JPEG whose data ends (with an end-of-image marker) before the
pixels its header declares would decode as a flat grey tail (libjpeg fills missing blocks
with mid-grey and only prints a warning); :func:`load_image` detects this and refuses it.
"""

from __future__ import annotations

import io
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
    "MAX_DECODE_PIXELS",
    "DECODE_LIMIT_FACTOR",
    "decode_budget",
    "ImageReadWarning",
    "ImageSource",
    "load_image",
    "to_rgb",
    "to_tensor01",
]

#: Images with more pixels than this are downscaled (aspect ratio kept) with a warning.
MAX_PIXELS: int = 24_000_000
#: The decoded-pixel budget: no image is decoded at more pixels than this (after JPEG
#: draft-mode reduction). 32 Mpixel keeps one image's peak memory under ~1 GB (RGBA and
#: 16-bit images need ~5 copies of 4 bytes per pixel while they are converted).
#: Overridden by ``max_decode_pixels=`` or ``VITVIZ_MAX_DECODE_PIXELS``.
MAX_DECODE_PIXELS: int = 32_000_000
#: Never decode more than this many times the downscale target ``max_pixels`` either.
DECODE_LIMIT_FACTOR: int = 8
_BUDGET_ENV = "VITVIZ_MAX_DECODE_PIXELS"
#: libjpeg's value for blocks it had no data for (zero coefficients -> mid-grey).
_JPEG_FILL = 128
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


def decode_budget(explicit: int | None = None) -> int:
    """The decoded-pixel budget: ``explicit``, else ``VITVIZ_MAX_DECODE_PIXELS``, else
    :data:`MAX_DECODE_PIXELS`. Raises ValueError for a value that is not a positive integer."""
    if explicit is not None:
        value, what = explicit, "max_decode_pixels"
    elif os.environ.get(_BUDGET_ENV):
        value, what = os.environ[_BUDGET_ENV].replace("_", ""), _BUDGET_ENV
    else:
        return MAX_DECODE_PIXELS
    try:
        budget = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer number of pixels, not {value!r}") from None
    if budget <= 0:
        raise ValueError(f"{what} must be a positive integer number of pixels, not {value!r}")
    return budget


def _os_reason(exc: OSError) -> str:
    """A short reason for an OS error (``Permission denied``, ``Is a directory``...)."""
    kind = {
        IsADirectoryError: "a directory, not an image file",
        PermissionError: "permission denied",
        FileNotFoundError: "no such file",
    }
    for cls, text in kind.items():
        if isinstance(exc, cls):
            return text
    if getattr(exc, "errno", None) == 40 or "symbolic links" in str(exc):  # ELOOP
        return "a symbolic link loop"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


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
    arr = arr.astype(np.float32)  # float32: 4 bytes per pixel keeps big images within the budget
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


def _draft_reduction(pixels: int, target: int, budget: int) -> int | None:
    """JPEG draft reduction r (1, 2, 4 or 8): the largest that still keeps at least
    ``target`` pixels, but at least the smallest that fits the budget; None if none fits."""
    fits = [r for r in (1, 2, 4, 8) if pixels / (r * r) <= budget]
    if not fits:
        return None
    quality = max((r for r in (1, 2, 4, 8) if pixels / (r * r) >= target), default=1)
    return max(quality, fits[0])


def _jpeg_claims_more_than_it_holds(
    source: ImageSource, img: Image.Image, request: tuple[int, int] | None
) -> bool:
    """True when a baseline JPEG's data ran out before the pixels its header declares.

    libjpeg then fills the missing blocks with mid-grey and only prints a warning. Only
    checked when the decoded last row is that exact grey (cheap; genuine photos almost never
    end in it): the file is decoded again without its final end-of-image marker, so libjpeg
    stops where the data really ends instead of inventing grey blocks. A complete file gives
    the same pixels as before everywhere but the last two MCU rows; a file that claims more
    pixels than it holds leaves the rows after its data undecoded.
    """
    if img.mode not in ("RGB", "L") or img.info.get("progressive") or img.info.get("progression"):
        return False  # progressive JPEGs only output pixels once every scan is read
    arr = np.asarray(img)  # (H, W, 3) or (H, W)
    if not (arr[-1] == _JPEG_FILL).all():
        return False
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            data = fh.read()
    elif hasattr(source, "seek") and hasattr(source, "read"):
        source.seek(0)
        data = source.read()
    else:
        return False
    end = data.rfind(b"\xff\xd9")
    if end <= 0:
        return False
    layers = getattr(img, "layer", None) or [("", 1, 1, 0)]
    scale = max(1, round(getattr(img, "_vitviz_full_height", img.size[1]) / img.size[1]))
    mcu_rows = max(1, 8 * max(int(v) for _, _, v, _ in layers) // scale)
    keep = arr.shape[0] - 2 * mcu_rows
    if keep <= 0:
        keep = arr.shape[0] // 2
    partial = Image.open(io.BytesIO(data[:end]))
    try:
        if request is not None:
            partial.draft(partial.mode, request)
        try:
            partial.load()
        except OSError:
            pass  # "truncated": expected, the rows decoded so far stay in partial.im
        core = partial._im  # noqa: SLF001 - the partially decoded pixels (no public API)
        if core is None or partial.size != img.size:
            return False
        rows = np.asarray(partial._new(core))  # noqa: SLF001
        return not np.array_equal(rows[:keep], arr[:keep])
    finally:
        partial.close()


def _decode(
    source: ImageSource, max_pixels: int, budget: int, background: tuple[int, int, int]
) -> Image.Image:
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            img = _open_unchecked(source)
        except Image.UnidentifiedImageError as exc:
            raise _ReadError("not an image PIL can identify (empty, truncated or another format)") from exc
        except OSError as exc:
            raise _ReadError(_os_reason(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - plugins raise SyntaxError, ValueError... on bad headers
            raise _ReadError(f"unreadable header ({type(exc).__name__}: {exc})") from exc
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise _ReadError(f"the header declares an empty {width}x{height} image")
        limit = min(budget, DECODE_LIMIT_FACTOR * max_pixels)
        target_scale = 1.0
        request: tuple[int, int] | None = None
        if width * height > max_pixels:
            target_scale = math.sqrt(max_pixels / (width * height))
        if width * height > min(limit, max_pixels) and getattr(img, "format", None) == "JPEG":
            r = _draft_reduction(width * height, max_pixels, limit)
            if r is not None and r > 1:
                request = (max(1, width // r), max(1, height // r))
                img._vitviz_full_height = height  # type: ignore[attr-defined]
                img.draft(img.mode, request)  # decode at 1/r scale: the full image never sits in memory
        decoded = img.size[0] * img.size[1]
        if decoded > limit:
            raise _ReadError(
                f"{width}x{height} pixels is too large to decode safely: {decoded} decoded pixels "
                f"exceed the decode budget of {limit} pixels (a decompression bomb? raise the budget with "
                f"max_decode_pixels= or {_BUDGET_ENV} if the image is genuine)"
            )
        img.load()
        if getattr(img, "format", None) == "JPEG" and _jpeg_claims_more_than_it_holds(source, img, request):
            raise _ReadError(
                f"the JPEG header declares {width}x{height} pixels but the file's data ends before "
                "them (corrupt or truncated file; decoding it would give a flat grey image)"
            )
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
    except OSError as exc:  # truncated data ("image file is truncated"), read errors
        raise _ReadError(
            _os_reason(exc) if exc.errno is not None else f"{type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:  # broken streams, plugin errors...
        raise _ReadError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if img is not source:
            img.close()


def load_image(
    path: ImageSource,
    on_error: str = "raise",
    *,
    max_pixels: int | None = None,
    max_decode_pixels: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image | None:
    """Read an image file as an upright 8-bit RGB PIL image.

    Args:
        path: a file path, a binary file object, or a PIL image (only converted).
        on_error: ``"raise"`` -> :class:`DataError` naming the file; ``"warn"`` -> an
            :class:`ImageReadWarning` naming the file and ``None``; ``"ignore"`` -> ``None``.
        max_pixels: downscale limit (default: the module constant :data:`MAX_PIXELS`).
        max_decode_pixels: the decoded-pixel budget (default :func:`decode_budget`): JPEGs
            above it are draft-decoded at 1/2, 1/4 or 1/8 scale, anything else is refused.
        background: RGB colour that transparent pixels are composited onto.

    Returns:
        A new ``RGB`` image, or ``None`` when unreadable and ``on_error`` is not ``"raise"``.
    """
    if on_error not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'ignore', not {on_error!r}")
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    budget = decode_budget(max_decode_pixels)
    try:
        return _decode(path, limit, budget, tuple(background))
    except _ReadError as exc:
        message = f"cannot read image {_describe(path)}: {exc}"
        if on_error == "raise":
            raise DataError(
                message + " (remove or replace the file, or read with on_error='warn' to skip it)"
            ) from None
        if on_error == "warn":
            warnings.warn(message + "; skipped", ImageReadWarning, stacklevel=2)
        return None


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (3, H, W) in [0, 1] (RGB conversion applied if needed)."""
    if img.mode != "RGB":
        img = to_rgb(img)
    arr = np.array(img, dtype=np.uint8, copy=True)  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
