"""The one disk cache of computed results: safe to load, keyed by code version and inputs.

A cache file is ``config.cache_dir()/<folder>/<kind>-<key>.npz``: a JSON tree (stored as the
``__json__`` byte array) plus the numeric arrays it refers to, read with
``numpy.load(allow_pickle=False)``. Nothing in a cache file can run code: decoding only
builds plain containers, numpy arrays, tensors, and instances of this package's own
dataclasses (found by name under ``vitviz_core``, filled field by field without calling any
constructor) and of :class:`~vitviz_core.evaluate.probe.LinearProbe` (rebuilt from its
shapes and state dict). A crafted, corrupt or foreign file is simply recomputed; values of
other types are computed but not cached (logged). Old pickle caches (``*.pkl``) are never
read.

The key (:func:`cache_key`) covers the kind of result, the models (architecture, weights
source and a hash of every parameter), the data (file list with sizes and mtimes, or tensor
bytes), the settings and the source code of the modules that compute the result
(:func:`code_version`), so a cached number is never older than the code that made it.

Users: :mod:`vitviz_core.studies_eval.cache` (chapter results) and the exemplar search
(:mod:`vitviz_core.evaluate.exemplars`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import io
import json
import logging
import math
import os
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.records import model_info, weights_fingerprint

_CACHE_VERSION = 2  # 2: .npz + JSON instead of pickle

log = logging.getLogger(__name__)
_PACKAGE = "vitviz_core."


def code_version(modules: Sequence[str | ModuleType]) -> str:
    """Hash of the source code of ``modules`` (module objects or dotted names)."""
    h = hashlib.sha256()
    for mod in modules:
        m = importlib.import_module(mod) if isinstance(mod, str) else mod
        h.update(m.__name__.encode())
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()[:16]


def _data_key(data: Any) -> Any:
    from vitviz_core.evaluate.records import dataset_fingerprint

    if data is None or isinstance(data, (str, int, float)):
        return data
    try:
        return {"fingerprint": dataset_fingerprint(data), "n": len(data)}
    except ValueError:
        raise VitvizError(
            f"cannot cache a result on a {type(data).__name__}: it cannot be fingerprinted (pass cache=False)"
        ) from None


def _model_key(model: Any) -> Any:
    from vitviz_core.models import LoadedModel, as_loaded

    if isinstance(model, (nn.Module, LoadedModel)):
        return {"info": model_info(model), "weights": weights_fingerprint(as_loaded(model).model)}
    return repr(model)


def cache_key(
    kind: str,
    models: Sequence[Any] = (),
    data: Any = None,
    settings: Mapping[str, Any] | None = None,
    code: str = "",
) -> str:
    """Hex key of a cached result: kind + models (info and weight hash) + data fingerprint
    + settings + ``code`` (a :func:`code_version` of the modules that compute it)."""
    from vitviz_core.evaluate.records import jsonable

    spec = {
        "v": _CACHE_VERSION,
        "kind": kind,
        "code": code,
        "models": [_model_key(m) for m in models],
        "data": _data_key(data),
        "settings": jsonable(dict(settings or {})),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:24]


# ------------------------------------------------------------------ pickle-free serialisation


class _Unsupported(TypeError):
    """A value this cache cannot store without pickle."""


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON-able tree for ``obj``; arrays and tensors go into ``arrays`` by name."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return {"__np__": obj.dtype.str, "v": _encode(obj.item(), arrays)}
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        name = f"a{len(arrays)}"
        arrays[name] = t.contiguous().numpy()
        return {"__tensor__": name, "dtype": dtype}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise _Unsupported("numpy object arrays")
        name = f"a{len(arrays)}"
        arrays[name] = np.ascontiguousarray(obj)
        return {"__array__": name}
    if isinstance(obj, PurePath):
        return {"__path__": str(obj)}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]}
    cls = type(obj)
    where = f"{cls.__module__}:{cls.__qualname__}"
    from vitviz_core.evaluate.probe import LinearProbe

    if isinstance(obj, LinearProbe):
        return {
            "__linear_probe__": {
                "features": obj.features,
                "num_prefix_tokens": obj.num_prefix_tokens,
                "state": _encode(dict(obj.state_dict()), arrays),
            }
        }
    if dataclasses.is_dataclass(obj) and cls.__module__.startswith(_PACKAGE):
        return {
            "__dataclass__": where,
            "fields": {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)},
        }
    raise _Unsupported(where)


def _dataclass_type(where: str) -> type:
    module_name, _, qualname = where.partition(":")
    if not module_name.startswith(_PACKAGE) or not qualname or "<" in qualname:
        raise ValueError(f"not a vitviz_core class: {where!r}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"not a dataclass: {where!r}")
    return obj


def _decode(node: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "__float__" in node:
        return float(node["__float__"])
    if "__np__" in node:
        return np.dtype(node["__np__"]).type(_decode(node["v"], arrays))
    if "__array__" in node:
        return np.array(arrays[node["__array__"]])
    if "__tensor__" in node:
        t = torch.from_numpy(np.array(arrays[node["__tensor__"]]))
        dtype = getattr(torch, str(node["dtype"]), None)
        return t.to(dtype) if isinstance(dtype, torch.dtype) else t
    if "__path__" in node:
        return Path(node["__path__"])
    if "__tuple__" in node:
        return tuple(_decode(v, arrays) for v in node["__tuple__"])
    if "__dict__" in node:
        return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in node["__dict__"]}
    if "__linear_probe__" in node:
        from vitviz_core.evaluate.probe import LinearProbe

        spec = node["__linear_probe__"]
        state = _decode(spec["state"], arrays)
        weight = state["linear.weight"]  # (K, D)
        probe = LinearProbe(
            int(weight.shape[1]), int(weight.shape[0]), str(spec["features"]), int(spec["num_prefix_tokens"])
        ).to(weight.dtype)
        probe.load_state_dict(state)
        return probe.eval()
    if "__dataclass__" in node:
        cls = _dataclass_type(str(node["__dataclass__"]))
        obj = cls.__new__(cls)  # no __init__ / __post_init__: fields are set one by one
        values = {k: _decode(v, arrays) for k, v in node["fields"].items()}
        for f in dataclasses.fields(cls):
            if f.name in values:
                object.__setattr__(obj, f.name, values[f.name])
        return obj
    raise ValueError(f"unknown node {sorted(node)[:3]}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def dumps(value: Any) -> bytes:
    """``value`` as ``.npz`` bytes (JSON tree + arrays); raises TypeError for unsupported types."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(value, arrays)
    payload = json.dumps({"v": _CACHE_VERSION, "tree": tree}, allow_nan=False).encode()
    buf = io.BytesIO()
    np.savez(buf, __json__=np.frombuffer(payload, dtype=np.uint8), **arrays)
    return buf.getvalue()


def loads(data: bytes | os.PathLike | str) -> Any:
    """Inverse of :func:`dumps`; never unpickles (``allow_pickle=False``)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with np.load(source, allow_pickle=False) as npz:
        meta = json.loads(bytes(npz["__json__"]).decode())
        if meta.get("v") != _CACHE_VERSION:
            raise ValueError(f"cache format {meta.get('v')!r}, expected {_CACHE_VERSION}")
        arrays = {k: npz[k] for k in npz.files if k != "__json__"}
    return _decode(meta["tree"], arrays)


def read(path: str | os.PathLike) -> Any:
    """The value stored at ``path`` (:func:`loads`); raises on a missing, corrupt or foreign file."""
    return loads(Path(path))


def write(path: str | os.PathLike, value: Any) -> bool:
    """Store ``value`` at ``path`` atomically; False (nothing written, logged) when it holds
    a type the pickle-free format cannot store."""
    path = Path(path)
    try:
        blob = dumps(value)
    except _Unsupported as exc:
        log.info("not caching %s: it holds a %s, which the pickle-free cache cannot store", path.name, exc)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return True


def cache_path(folder: str, kind: str, key: str) -> Path:
    """``config.cache_dir()/<folder>/<kind>-<key>.npz``."""
    from vitviz_core import config

    return config.cache_dir() / folder / f"{kind}-{key}.npz"


def cached(
    kind: str,
    compute: Callable[[], Any],
    *,
    folder: str = "results",
    models: Sequence[Any] = (),
    data: Any = None,
    settings: Mapping[str, Any] | None = None,
    code: str = "",
    enabled: bool = True,
) -> Any:
    """``compute()``, or its result from ``cache_dir()/<folder>/<kind>-<key>.npz`` when the same
    models, data, settings and code computed it before. A corrupt or foreign cache file is
    recomputed (and never executed: see the module docstring).

    Args:
        code: :func:`code_version` of the modules whose code decides the value.
    """
    if not enabled:
        return compute()
    path = cache_path(folder, kind, cache_key(kind, models, data, settings, code))
    if path.is_file():
        try:
            return read(path)
        except Exception as exc:  # noqa: BLE001 - unreadable cache entry: recompute
            log.info("recomputing %s: cache file %s is unreadable (%s)", kind, path.name, exc)
    value = compute()
    write(path, value)
    return value
