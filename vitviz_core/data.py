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
``__getitem__`` returns an :class:`Unreadable` marker (its index and file name) instead of
a sample; ``"ignore"`` does the same silently. A bad file is never replaced by another
sample: it must be *absent* from every statistic, not counted twice. The batch contract
that keeps it absent works across DataLoader worker processes (where a dataset's own
state is not shared): :func:`collate_skipping` drops the markers from a batch and returns
a :class:`Batch` (a list ``[x, labels, indices, *rest]``) whose ``skipped`` /
``skipped_files`` name the dropped samples; ``vitviz_core.evaluate.common.make_loader``
uses it, drops batches that had nothing readable, and records every skipped file in
:func:`skipped_files` (per dataset, in the main process), which result records report. With
``on_error="raise"`` a :class:`~vitviz_core.errors.DataError` naming the file is raised.

Folder walking never leaves the dataset root: a class folder (or a subfolder) that is a
symbolic link is followed only when it resolves inside the root and is not an ancestor
of itself, and every real folder is walked once, so a link to the root or a link cycle
cannot give a file a second, wrong label.

Image decoding lives in :mod:`vitviz_core.images` and box reading in
:mod:`vitviz_core.boxes`; both are re-exported here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torch.utils.data import default_collate

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
    "Unreadable",
    "Batch",
    "collate_skipping",
    "skipped_files",
    "note_skipped",
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
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)
log = logging.getLogger(__name__)

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
        raise DataError(
            f"timm's ImageNet class list has {len(wnids)} entries, expected 1000 (reinstall timm)"
        )
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


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk(top: Path, base: Path, seen: set[Path]) -> Iterable[tuple[Path, list[str]]]:
    """``(folder, file names)`` under ``top``, sorted, hidden entries skipped, never leaving
    ``base`` (a resolved folder) through a symbolic link and never visiting a real folder
    twice (link cycles). ``seen`` holds the resolved folders already walked."""
    real = top.resolve()
    if real in seen or not _inside(real, base):
        log.info("not following symbolic link %s -> %s (outside %s, or a cycle)", top, real, base)
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list folder %s: %s", top, exc)
        return
    files = []
    subdirs = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows links; a loop or dangling link is not a folder
        except OSError:
            is_dir = False
        (subdirs if is_dir else files).append(entry.name)
    yield top, files
    for name in subdirs:
        yield from _walk(top / name, base, seen)


def _class_folders(root: Path) -> list[tuple[Path, Path]]:
    """``(class folder, its resolved path)`` for the class folders of ``root``, sorted by name.

    A class folder that is a symbolic link is used only if it leads neither to the root nor
    to one of its ancestors (that would relabel every image) nor into a folder another class
    already has (real folders win): links to folders elsewhere (a subset assembled from
    links) are fine. Dropped links are logged at WARNING."""
    real_root = root.resolve()
    candidates = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not _is_folder(d):
            continue
        candidates.append((d, d.resolve()))
    claimed = [real for d, real in candidates if not d.is_symlink()]
    kept = [(d, real) for d, real in candidates if not d.is_symlink()]
    for d, real in candidates:
        if not d.is_symlink():
            continue
        if _inside(real_root, real):
            log.warning(
                "%s: class folder %s links to the dataset root or above it (%s); skipped", root, d.name, real
            )
        elif any(_inside(real, c) or _inside(c, real) for c in claimed):
            log.warning(
                "%s: class folder %s links to a folder another class already has (%s); skipped",
                root,
                d.name,
                real,
            )
        else:
            claimed.append(real)
            kept.append((d, real))
    return sorted(kept, key=lambda t: t[0].name)


def _has_images(folder: Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> bool:
    """True as soon as one image file is found under ``folder`` (cheap on big trees)."""
    for _dirpath, filenames in _walk(folder, folder.resolve(), set()):
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
        candidates += [
            base / name,
            base / "ILSVRC" / "Data" / "CLS-LOC" / name,
            base / "Data" / "CLS-LOC" / name,
        ]
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


@dataclass(frozen=True)
class Unreadable:
    """What ``ImageListDataset.__getitem__`` returns for a file it could not read (with
    ``on_error`` "warn" or "ignore"): never collated, never counted (see :func:`collate_skipping`).

    Deliberately not a tuple: code that batches it with torch's ``default_collate`` or unpacks
    it as ``x, y, i`` fails at once instead of mixing it into a batch."""

    index: int  # the dataset index of the sample
    file: str  # the file's name (not its path: results are published)


class Batch(list):
    """A collated batch ``[x, labels, indices, *rest]`` that also names the samples dropped
    from it: ``skipped`` (dataset indices) and ``skipped_files`` (file names). Empty (no
    items) when every sample of the batch was unreadable. Survives DataLoader workers
    (pickled with its attributes) and ``pin_memory``."""

    def __init__(
        self, items: Iterable[Any] = (), skipped: Sequence[int] = (), skipped_files: Sequence[str] = ()
    ) -> None:
        super().__init__(items)
        self.skipped: list[int] = [int(i) for i in skipped]
        self.skipped_files: list[str] = [str(f) for f in skipped_files]

    def pin_memory(self) -> "Batch":
        return Batch(
            [t.pin_memory() if isinstance(t, torch.Tensor) else t for t in self],
            self.skipped,
            self.skipped_files,
        )


def collate_skipping(items: Sequence[Any]) -> Batch:
    """DataLoader ``collate_fn``: drop :class:`Unreadable` markers, collate the rest with
    torch's ``default_collate``, and name the dropped samples in the :class:`Batch`."""
    bad = [it for it in items if isinstance(it, Unreadable)]
    good = [it for it in items if not isinstance(it, Unreadable)]
    collated = default_collate(good) if good else []
    if isinstance(collated, torch.Tensor):  # a dataset of bare tensors
        collated = [collated]
    return Batch(collated, [b.index for b in bad], [b.file for b in bad])


_SKIPPED: "weakref.WeakKeyDictionary[Any, dict[int, str]]" = weakref.WeakKeyDictionary()


def note_skipped(dataset: Any, indices: Iterable[int], files: Iterable[str]) -> None:
    """Record (in this process) that passes over ``dataset`` skipped these samples."""
    try:
        reg = _SKIPPED.setdefault(dataset, {})
    except TypeError:  # not weak-referenceable: nothing to record on
        return
    for i, f in zip(indices, files):
        reg[int(i)] = str(f)


def skipped_files(dataset: Any) -> dict[int, str]:
    """``{dataset index: file name}`` of the unreadable samples that passes through
    ``make_loader`` (or :func:`note_skipped`) met in this process; empty if none."""
    try:
        return dict(_SKIPPED.get(dataset, {}))
    except TypeError:
        return {}


class ImageListDataset(Dataset):
    """A list of ``(image path, label)``; ``__getitem__(i) -> (image_tensor, label, index)``.

    ``transform`` maps the RGB PIL image to a tensor; without one the image becomes a float
    tensor (3, H, W) in [0, 1] at its own size. An unreadable file gives an
    :class:`Unreadable` marker instead (``on_error`` "warn"/"ignore"; see the module
    docstring): batch such a dataset with :func:`collate_skipping` (``make_loader`` does).
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
        self.bad_files: set[Path] = set()  # unreadable files met in this process (not re-read)

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
        if path in self.bad_files:
            return None
        img = load_image(path, on_error=self.on_error)
        if img is None:
            self.bad_files.add(path)
        return img

    def _normalize_index(self, index: int) -> int:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return index % n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | Unreadable:
        i = self._normalize_index(int(index))
        path, label = self.samples[i]
        img = self.image(i)
        if img is None:
            return Unreadable(i, path.name)
        x = self.transform(img) if self.transform is not None else to_tensor01(img)  # (3, H, W)
        return x, label, i


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
        groups: list[tuple[str, list[Path]]] = []
        for d, real in _class_folders(root):
            files = sorted(Path(dp) / f for dp, fn in _walk(d, real, set()) for f in fn if _is_image(f, exts))
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
            flat = sorted(p for p in root.iterdir() if _is_image(p.name, exts) and not _is_folder(p))
            if not flat:
                raise DataError(
                    f"no images in {root} (looked for {', '.join(sorted(exts))} in it and its subfolders)"
                )
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
            description=f"{root.name} ({len(samples)} images, {n_labels} labelled classes)",  # no machine path
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
