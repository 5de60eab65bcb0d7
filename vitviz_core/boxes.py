"""ILSVRC bounding boxes: the per-image XML files, ``LOC_*_solution.csv``, and box masks.

Two standard formats are read:

- Per-image PASCAL-VOC style XML (``ILSVRC2012_val_00000001.xml``)::

      <annotation><size><width>500</width><height>375</height></size>
        <object><name>n01751748</name>
          <bndbox><xmin>111</xmin><ymin>108</ymin><xmax>441</xmax><ymax>374</ymax></bndbox>
        </object></annotation>

- ``LOC_val_solution.csv`` / ``LOC_train_solution.csv`` (Kaggle ILSVRC layout)::

      ImageId,PredictionString
      ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295

Coordinates are kept as read, in the original image's pixels. ILSVRC boxes are inclusive
pixel indices (a box touching the right edge has ``xmax == width - 1``);
:func:`boxes_to_mask` treats them that way, and also accepts ``xmax == width``.

A malformed file raises :class:`~vitviz_core.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import math
import os
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .errors import DataError

__all__ = [
    "Box",
    "read_ilsvrc_xml",
    "read_ilsvrc_xml_dir",
    "read_loc_val_solution",
    "boxes_to_mask",
]


@dataclass
class Box:
    """One labelled box in original image pixel coordinates (inclusive corners)."""

    wnid: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


# ---------------------------------------------------------------------------- XML


@dataclass
class _Node:
    tag: str
    line: int
    text: str = ""
    children: list["_Node"] = field(default_factory=list)

    def find(self, tag: str) -> "_Node | None":
        return next((c for c in self.children if c.tag == tag), None)


def _parse_xml(path: Path) -> _Node:
    """A tiny element tree that remembers each element's line number (for error messages)."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read box file {path}: {exc.strerror or exc}") from None
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: malformed XML ({xml.parsers.expat.ErrorString(exc.code)})"
        ) from None
    if not root:
        raise DataError(f"{path}:1: empty XML file")
    return root[0]


def _number(node: _Node | None, parent: _Node, tag: str, path: Path) -> float:
    if node is None:
        raise DataError(f"{path}:{parent.line}: <{parent.tag}> has no <{tag}>")
    try:
        value = float(node.text.strip())
    except ValueError:
        raise DataError(f"{path}:{node.line}: <{tag}> is not a number: {node.text.strip()!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{node.line}: <{tag}> is not finite: {node.text.strip()!r}")
    return value


def read_ilsvrc_xml(path: str | os.PathLike) -> tuple[tuple[int, int], list[Box]]:
    """Read one ILSVRC/PASCAL-VOC annotation file -> ``((width, height), boxes)``."""
    path = Path(path)
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise DataError(f"{path}:{root.line}: expected <annotation> as the root element, found <{root.tag}>")
    size = root.find("size")
    if size is None:
        raise DataError(f"{path}:{root.line}: <annotation> has no <size>")
    width = _number(size.find("width"), size, "width", path)
    height = _number(size.find("height"), size, "height", path)
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DataError(f"{path}:{size.line}: image size must be positive integers, got {width}x{height}")
    boxes: list[Box] = []
    for obj in root.children:
        if obj.tag != "object":
            continue
        name = obj.find("name")
        if name is None or not name.text.strip():
            raise DataError(f"{path}:{obj.line}: <object> has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{path}:{obj.line}: <object> has no <bndbox>")
        coords = [_number(bnd.find(t), bnd, t, path) for t in ("xmin", "ymin", "xmax", "ymax")]
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise DataError(f"{path}:{bnd.line}: box has xmax < xmin or ymax < ymin: {coords}")
        boxes.append(Box(name.text.strip(), *coords))
    return (int(width), int(height)), boxes


def read_ilsvrc_xml_dir(folder: str | os.PathLike) -> dict[str, tuple[tuple[int, int], list[Box]]]:
    """Read every ``*.xml`` under ``folder`` (recursively) -> image id (file stem) -> (size, boxes)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"box folder {folder} does not exist")
    files = sorted(folder.rglob("*.xml"))
    if not files:
        raise DataError(f"no *.xml annotation files in {folder}")
    return {f.stem: read_ilsvrc_xml(f) for f in files}


# ---------------------------------------------------------------------------- CSV


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_loc_val_solution(path: str | os.PathLike) -> dict[str, list[Box]]:
    """Read ``LOC_val_solution.csv`` (or ``LOC_train_solution.csv``) -> image id -> boxes.

    ``PredictionString`` holds groups of five tokens ``wnid xmin ymin xmax ymax``.
    """
    path = Path(path)
    out: dict[str, list[Box]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read box file {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}:1: empty file (expected header 'ImageId,PredictionString')")
            if [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise DataError(
                    f"{path}:1: expected header 'ImageId,PredictionString', found {','.join(header)!r}"
                )
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise DataError(
                        f"{path}:{line}: expected 2 columns (ImageId,PredictionString), found {len(row)}"
                    )
                image_id, tokens = row[0].strip(), row[1].split()
                if not image_id:
                    raise DataError(f"{path}:{line}: empty ImageId")
                if not tokens or len(tokens) % 5:
                    raise DataError(
                        f"{path}:{line}: PredictionString must be groups of 'wnid xmin ymin xmax ymax', "
                        f"found {len(tokens)} tokens"
                    )
                boxes = out.setdefault(image_id, [])
                for k in range(0, len(tokens), 5):
                    wnid, *nums = tokens[k : k + 5]
                    if _is_number(wnid):
                        raise DataError(
                            f"{path}:{line}: expected a wnid at token {k + 1}, found the number {wnid!r}"
                        )
                    try:
                        xmin, ymin, xmax, ymax = (float(v) for v in nums)
                    except ValueError:
                        raise DataError(
                            f"{path}:{line}: box {k // 5 + 1} has a non-numeric coordinate: {nums}"
                        ) from None
                    if (
                        not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax))
                        or xmax < xmin
                        or ymax < ymin
                    ):
                        raise DataError(f"{path}:{line}: box {k // 5 + 1} is invalid: {nums}")
                    boxes.append(Box(wnid, xmin, ymin, xmax, ymax))
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}:{reader.line_num + 1}: not a UTF-8 text file") from None
    if not out:
        raise DataError(f"{path}: no boxes (only a header)")
    return out


# ---------------------------------------------------------------------------- masks


def _as_coords(box: Box | Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(box, Box):
        return box.xmin, box.ymin, box.xmax, box.ymax
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return xmin, ymin, xmax, ymax


def boxes_to_mask(
    boxes: Iterable[Box | Sequence[float]],
    image_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Union of boxes as a boolean mask ``(H, W)``.

    Args:
        boxes: :class:`Box` objects or ``(xmin, ymin, xmax, ymax)`` in original pixels,
            inclusive (``xmax == width - 1`` reaches the right edge).
        image_size: ``(width, height)`` of the original image the boxes refer to.
        out_size: ``(width, height)`` of the mask; boxes are scaled to it (plain resize,
            no crop). ``None``: the original size.
        device: where to build the mask (default CPU).

    A mask pixel is set when its centre lies inside a box; a box too small to cover any
    pixel centre at ``out_size`` still marks the pixel under its centre.
    """
    width, height = (int(v) for v in image_size)
    out_w, out_h = (width, height) if out_size is None else (int(v) for v in out_size)
    if width <= 0 or height <= 0 or out_w <= 0 or out_h <= 0:
        raise ValueError(f"sizes must be positive, got image_size={image_size}, out_size={out_size}")
    sx, sy = width / out_w, height / out_h
    cx = (torch.arange(out_w, device=device, dtype=torch.float64) + 0.5) * sx  # (W,) centres, original px
    cy = (torch.arange(out_h, device=device, dtype=torch.float64) + 0.5) * sy  # (H,)
    mask = torch.zeros(out_h, out_w, dtype=torch.bool, device=device)  # (H, W)
    for box in boxes:
        xmin, ymin, xmax, ymax = _as_coords(box)
        # inclusive pixel indices -> continuous extent [xmin, xmax + 1)
        in_x = (cx >= xmin) & (cx < xmax + 1)  # (W,)
        in_y = (cy >= ymin) & (cy < ymax + 1)  # (H,)
        if not bool(in_x.any()) or not bool(in_y.any()):
            mid_x, mid_y = (xmin + xmax + 1) / 2, (ymin + ymax + 1) / 2
            if not (0 <= mid_x < width + 1 and 0 <= mid_y < height + 1):
                continue  # box entirely outside the image
            if not bool(in_x.any()):
                in_x = torch.zeros_like(in_x)
                in_x[min(out_w - 1, max(0, int(mid_x / sx)))] = True
            if not bool(in_y.any()):
                in_y = torch.zeros_like(in_y)
                in_y[min(out_h - 1, max(0, int(mid_y / sy)))] = True
        mask |= in_y[:, None] & in_x[None, :]  # (H, W)
    return mask
