"""ImageNet-style datasets: class names, image folders, a built-in photo gallery, boxes.

- :func:`imagenet_wnids` / :func:`imagenet_class_names`: the 1000 ImageNet-1k classes in
  the standard sorted-wnid order that timm/torchvision heads use (read from the
  ``timm/data/_info`` files that ship with timm).
- :class:`ImageFolderDataset`: ``<root>/<wnid>/*.JPEG`` trees. A sample's label is the
  index of its folder's wnid in the *full* 1000-class order, never the folder's position
  (``imagenet-val-1300`` has only 725 class folders). Also reads a flat folder of images
  (label -1, or labels from a ``LOC_val_solution.csv`` found next to it).
- :func:`find_dataset`: a dataset folder under :func:`vitviz_core.config.data_root`
  (``VITVIZ_DATA``), including a user's own ImageNet (``<root>/val``, ``<root>/train``,
  or the Kaggle ``ILSVRC/Data/CLS-LOC/{val,train}`` layout).
- :func:`gallery_dataset`: real photos that ship inside installed wheels (scikit-image,
  scikit-learn, matplotlib), so everything runs on a machine without any dataset.
- :func:`default_dataset`: the shared dataset when present, else the gallery.

Unreadable images: with ``on_error="warn"`` (the default for datasets) a bad file is
reported once with an :class:`~vitviz_core.images.ImageReadWarning` naming it, and
``__getitem__`` returns the *next readable sample* instead (its own label and its own
index, which is the third element of the returned tuple). Every item is then a real
image, so batches collate normally and a long run never stops on one bad file; the index
tells the caller which sample it actually got. With ``on_error="raise"`` a
:class:`~vitviz_core.errors.DataError` naming the file is raised.

Image decoding lives in :mod:`vitviz_core.images` and box reading in
:mod:`vitviz_core.boxes`; both are re-exported here.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from . import config
from .boxes import Box, boxes_to_mask, read_ilsvrc_xml, read_ilsvrc_xml_dir, read_loc_val_solution
from .errors import DataError
from .images import MAX_PIXELS, ImageReadWarning, load_image, to_rgb, to_tensor01

__all__ = [
    "IMAGE_EXTENSIONS",
    "imagenet_wnids",
    "imagenet_class_names",
    "wnid_to_index",
    "class_name",
    "load_image",
    "to_rgb",
    "to_tensor01",
    "ImageReadWarning",
    "MAX_PIXELS",
    "find_dataset",
    "ImageListDataset",
    "ImageFolderDataset",
    "GalleryDataset",
    "gallery_dataset",
    "default_dataset",
    "Box",
    "read_ilsvrc_xml",
    "read_ilsvrc_xml_dir",
    "read_loc_val_solution",
    "boxes_to_mask",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
DEFAULT_DATASET = "imagenet-val-1300"
_DATA_HINT = "set VITVIZ_DATA=/folder/that/contains/<dataset> or pass root="

# ---------------------------------------------------------------------------- class names

# Two ImageNet-1k classes share their first lemma with another class; use the same
# disambiguated names as torchvision's weight metadata so every name is unique.
_NAME_FIXES = {"n02012849": "crane bird", "n03710721": "maillot tank suit"}


def _timm_info_dir() -> Path | None:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    return path if (path / "imagenet_synsets.txt").is_file() else None


@lru_cache(maxsize=1)
def _imagenet_tables() -> tuple[tuple[str, ...], tuple[str, ...]]:
    info_dir = _timm_info_dir()
    if info_dir is not None:
        wnids = [w.strip() for w in (info_dir / "imagenet_synsets.txt").read_text().splitlines() if w.strip()]
        wanted = set(wnids)
        lemmas: dict[str, str] = {}
        for line in (info_dir / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
            wnid, _, lemma = line.partition("\t")
            if wnid in wanted:
                lemmas[wnid] = lemma
    else:  # pragma: no cover - timm moved its files; use the public API
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        wnids = list(info.label_names())
        lemmas = {w: info.label_name_to_description(w) for w in wnids}
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise DataError(f"timm's ImageNet class list has {len(wnids)} entries, expected 1000 (reinstall timm)")
    names = [_NAME_FIXES.get(w, lemmas.get(w, w).split(",")[0].strip()) for w in wnids]
    return tuple(wnids), tuple(names)


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in the standard sorted order (index 0 = ``n01440764``)."""
    return list(_imagenet_tables()[0])


def imagenet_class_names() -> list[str]:
    """1000 readable, unique class names in the standard order (index 0 = ``"tench"``)."""
    return list(_imagenet_tables()[1])


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(_imagenet_tables()[0])}


def wnid_to_index() -> dict[str, int]:
    """wnid -> class index in the standard 1000-class order."""
    return dict(_wnid_index())


def class_name(label: int) -> str:
    """Readable name of an ImageNet class index; ``"unlabelled"`` for -1."""
    if label < 0:
        return "unlabelled"
    return _imagenet_tables()[1][label]


# ---------------------------------------------------------------------------- folders


def _is_image(name: str, extensions: frozenset[str]) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def _has_images(folder: Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    """True as soon as one image file is found under ``folder`` (cheap on big trees)."""
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(_is_image(f, extensions) for f in filenames):
            return True
    return False


def find_dataset(name: str = DEFAULT_DATASET, root: str | os.PathLike | None = None) -> Path:
    """Folder of dataset ``name`` under the data root; :class:`DataError` if missing or empty.

    ``name`` is a folder under the data root (``root``, else ``VITVIZ_DATA``, else the shared
    data folder): ``"imagenet-val-1300"``, ``"imagenet-sample-1000"``, or for a user's own
    ImageNet ``"val"`` / ``"train"`` (``<root>/val`` or ``<root>/ILSVRC/Data/CLS-LOC/val``).
    A name that is itself a path (absolute, ``./...``, ``~/...``) is used as is.
    """
    candidates: list[Path] = []
    as_path = Path(name).expanduser()
    if as_path.is_absolute() or name.startswith((".", "~")) or os.sep in name or "/" in name:
        candidates.append(as_path)
    base = config.data_root(root)
    if base is not None:
        candidates += [base / name, base / "ILSVRC" / "Data" / "CLS-LOC" / name, base / "Data" / "CLS-LOC" / name]
        if base.name == name:
            candidates.append(base)
    elif not candidates:
        raise DataError(f"dataset {name!r} not found: no data folder is configured; {_DATA_HINT}")
    for candidate in candidates:
        if candidate.is_dir():
            if not _has_images(candidate):
                raise DataError(f"dataset folder {candidate} contains no images ({_DATA_HINT})")
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"dataset {name!r} not found (tried {tried}); {_DATA_HINT}")


class ImageListDataset(Dataset):
    """A list of ``(image path, label)``; ``__getitem__(i) -> (image_tensor, label, index)``.

    ``transform`` maps the RGB PIL image to a tensor; without one the image becomes a float
    tensor (3, H, W) in [0, 1] at its own size. See the module docstring for ``on_error``.
    """

    description: str = ""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        on_error: str = "warn",
        description: str = "",
    ) -> None:
        if on_error not in ("raise", "warn", "ignore"):
            raise ValueError(f"on_error must be 'raise', 'warn' or 'ignore', not {on_error!r}")
        self.samples: list[tuple[Path, int]] = [(Path(p), int(label)) for p, label in samples]
        self.transform = transform
        self.on_error = on_error
        self.description = description
        self.bad_files: set[Path] = set()  # unreadable files met so far (in this process)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order (-1 = unlabelled)."""
        return [label for _, label in self.samples]

    def class_name(self, label: int) -> str:
        """Readable name of a label of this dataset."""
        return class_name(label)

    def image(self, index: int) -> Image.Image | None:
        """The RGB PIL image of sample ``index`` (``None`` if unreadable and not raising)."""
        path = self.samples[index][0]
        img = load_image(path, on_error=self.on_error)
        if img is None:
            self.bad_files.add(path)
        return img

    def _normalize_index(self, index: int) -> int:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return index % n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        index = self._normalize_index(int(index))
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            path, label = self.samples[i]
            if path in self.bad_files:
                continue
            img = self.image(i)
            if img is None:
                continue
            x = self.transform(img) if self.transform is not None else to_tensor01(img)  # (3, H, W)
            return x, label, i
        raise DataError(f"no readable image in {self.description or 'the dataset'} ({n} files, all unreadable)")


def _subset(items: list, max_images: int | None) -> list:
    """``max_images`` items spread evenly over the (sorted) list: deterministic and diverse."""
    if max_images is None or max_images >= len(items):
        return items
    if max_images <= 0:
        raise ValueError(f"max_images must be positive, got {max_images}")
    n = len(items)
    return [items[(k * n) // max_images] for k in range(max_images)]


def _find_labels_file(root: Path) -> Path | None:
    for folder in (root, *list(root.parents)[:4]):
        for name in ("LOC_val_solution.csv", "LOC_train_solution.csv"):
            if (folder / name).is_file():
                return folder / name
    return None


class ImageFolderDataset(ImageListDataset):
    """Images in ``<root>/<class>/**/<file>`` (or flat in ``<root>``), sorted by path.

    Labels:
        - class folders named by ImageNet wnids: the wnid's index in the full 1000-class
          order (``label_space == "imagenet"``); a stray non-wnid folder gets -1 (warned);
        - no folder is a wnid: the folder's position in sorted order (``"folders"``);
        - a flat folder: from ``labels_file`` (``"auto"`` finds a ``LOC_val_solution.csv``
          in ``root`` or up to 4 parents; a CSV path; or a mapping image stem -> wnid or
          index), else -1 (``"none"``).

    Subsets (deterministic): ``per_class`` keeps the first files of each class (sorted
    paths), then ``max_images`` keeps that many samples spread evenly over the sorted list
    (so a small subset still covers many classes).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        max_images: int | None = None,
        per_class: int | None = None,
        on_error: str = "warn",
        labels_file: str | os.PathLike | Mapping[str, str | int] | None = "auto",
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        root = Path(root).expanduser()
        exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist ({_DATA_HINT})")
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        groups: list[tuple[str, list[Path]]] = []
        for d in class_dirs:
            files = sorted(
                Path(dp) / f
                for dp, dn, fn in os.walk(d)
                for f in fn
                if _is_image(f, exts) and not any(part.startswith(".") for part in Path(dp).relative_to(d).parts)
            )
            if files:
                groups.append((d.name, files))
        if per_class is not None and per_class <= 0:
            raise ValueError(f"per_class must be positive, got {per_class}")
        self.root = root
        self.classes: list[str] = [g for g, _ in groups]
        entries: list[tuple[Path, int, object]] = []  # (path, label, per_class group), sorted by path
        if groups:
            self.layout = "classes"
            labels = self._folder_labels(self.classes)
            for (group, files), label in zip(groups, labels):
                entries += [(f, label, group) for f in files]
        else:
            flat = sorted(p for p in root.iterdir() if p.is_file() and _is_image(p.name, exts))
            if not flat:
                raise DataError(f"no images in {root} (looked for {', '.join(sorted(exts))} in it and its subfolders)")
            self.layout = "flat"
            entries = [(f, label, label) for f, label in zip(flat, self._flat_labels(flat, labels_file))]
        if per_class is not None:
            seen: dict[object, int] = {}
            kept = []
            for entry in entries:
                seen[entry[2]] = seen.get(entry[2], 0) + 1
                if seen[entry[2]] <= per_class:
                    kept.append(entry)
            entries = kept
        samples = _subset([(f, label) for f, label, _ in entries], max_images)
        n_labels = len({label for _, label in samples if label >= 0})
        super().__init__(
            samples,
            transform=transform,
            on_error=on_error,
            description=f"{root} ({len(samples)} images, {n_labels} labelled classes)",
        )

    def _folder_labels(self, names: list[str]) -> list[int]:
        index = _wnid_index()
        known = [n in index for n in names]
        if not any(known):
            self.label_space = "folders"
            return list(range(len(names)))
        self.label_space = "imagenet"
        stray = [n for n, k in zip(names, known) if not k]
        if stray:
            warnings.warn(
                f"{self.root}: folders {stray[:5]}{'...' if len(stray) > 5 else ''} are not ImageNet wnids; "
                "their images get label -1",
                stacklevel=3,
            )
        return [index.get(n, -1) for n in names]

    def _flat_labels(self, files: list[Path], labels_file) -> list[int]:
        mapping: Mapping[str, str | int] | None = None
        if isinstance(labels_file, Mapping):
            mapping = labels_file
        elif labels_file is not None:
            csv_path = _find_labels_file(self.root) if labels_file == "auto" else Path(labels_file)
            if csv_path is not None:
                mapping = {k: v[0].wnid for k, v in read_loc_val_solution(csv_path).items() if v}
        if mapping is None:
            self.label_space = "none"
            return [-1] * len(files)
        self.label_space = "imagenet"
        index = _wnid_index()
        labels = []
        for f in files:
            value = mapping.get(f.stem, mapping.get(f.name, -1))
            labels.append(int(value) if isinstance(value, int) else index.get(str(value), -1))
        return labels

    def class_name(self, label: int) -> str:
        if self.label_space == "folders" and label >= 0:
            return self.classes[label]
        return class_name(label)


# ---------------------------------------------------------------------------- gallery

# (name, package, path inside the package, ImageNet wnid or None when no class fits)
_GALLERY: tuple[tuple[str, str, str, str | None], ...] = (
    ("astronaut", "skimage", "data/astronaut.png", None),  # Eileen Collins portrait
    ("coffee", "skimage", "data/coffee.png", "n07920052"),  # espresso cup on a saucer
    ("chelsea", "skimage", "data/chelsea.png", "n02123045"),  # tabby cat
    ("rocket", "skimage", "data/rocket.jpg", None),  # Falcon 9 on the launch pad
    ("motorcycle", "skimage", "data/motorcycle_left.png", None),  # no motorcycle class in ImageNet-1k
    ("camera", "skimage", "data/camera.png", None),  # grayscale photo (cameraman), shown as RGB
    ("china", "sklearn", "datasets/images/china.jpg", "n03877845"),  # Summer Palace, Beijing: palace
    ("flower", "sklearn", "datasets/images/flower.jpg", None),  # dahlia (no such class)
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "n03763968"),  # military uniform
)
_PACKAGE_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)  # locates without importing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class GalleryDataset(ImageListDataset):
    """The built-in gallery; ``names[i]`` and ``sources[i]`` describe sample ``i``."""

    def __init__(self, transform=None, on_error: str = "warn") -> None:
        samples, names, sources = [], [], []
        index = _wnid_index()
        for name, package, rel, wnid in _GALLERY:
            base = _package_dir(package)
            if base is None or not (base / rel).is_file():
                continue
            samples.append((base / rel, index[wnid] if wnid else -1))
            names.append(name)
            sources.append(_PACKAGE_NAMES[package])
        if not samples:
            raise DataError(
                "no built-in gallery photos found: install scikit-image, scikit-learn or matplotlib, "
                f"or {_DATA_HINT}"
            )
        self.names: list[str] = names
        self.sources: list[str] = sources
        used = ", ".join(dict.fromkeys(sources))
        super().__init__(
            samples,
            transform=transform,
            on_error=on_error,
            description=f"built-in gallery: {len(samples)} photos shipped with {used}",
        )


def gallery_dataset(transform: Callable[[Image.Image], torch.Tensor] | None = None) -> GalleryDataset:
    """Real photos that ship inside installed wheels (scikit-image, scikit-learn, matplotlib).

    Labels are best-effort ImageNet classes (chelsea -> tabby, coffee -> espresso, china ->
    palace, grace_hopper -> military uniform) and -1 where no ImageNet-1k class fits.
    """
    return GalleryDataset(transform=transform)


def default_dataset(
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    name: str = DEFAULT_DATASET,
    root: str | os.PathLike | None = None,
    **kwargs,
) -> ImageListDataset:
    """The dataset ``name`` when it can be found, else the built-in gallery.

    ``kwargs`` (``max_images``, ``per_class``, ``on_error``) go to :class:`ImageFolderDataset`.
    The result's ``.description`` says which one was used (and why, for the gallery). A
    missing folder that was asked for explicitly (``root`` or ``VITVIZ_DATA``) also warns.
    """
    try:
        folder = find_dataset(name, root)
    except DataError as exc:
        if root is not None or os.environ.get("VITVIZ_DATA"):
            warnings.warn(f"{exc}; using the built-in gallery instead", stacklevel=2)
        gallery = gallery_dataset(transform)
        gallery.description += f" (dataset {name!r} not available)"
        return gallery
    ds = ImageFolderDataset(folder, transform=transform, **kwargs)
    ds.description = f"{name}: {ds.description}"
    return ds
