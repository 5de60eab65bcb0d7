"""On-disk cache of chapter results, keyed by the models' weights, the data, the settings and the
source code of the modules that compute them. Cache files are pickles under
``config.cache_dir()/studies`` written by this package; only load caches you wrote yourself."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from vitviz_core.errors import VitvizError
from vitviz_core.evaluate.records import model_info, weights_fingerprint

_CACHE_VERSION = 1


#: Modules of this package that compute cached numbers (their plots change no number, but
#: are hashed with them: a cached result is never older than the code that made it).
_COMPUTING = ("token_study", "foreground", "masking_study", "background", "frequency_study")


def _code_version() -> str:
    """Hash of the source of the modules whose code decides the cached numbers."""
    import importlib

    from vitviz_core import models
    from vitviz_core.evaluate import (
        common,
        frequency,
        masking,
        probe,
        stats,
        token_mixing,
    )

    h = hashlib.sha256()
    for mod in (common, frequency, masking, probe, stats, token_mixing, models):
        h.update(inspect.getsource(mod).encode())
    for name in _COMPUTING:
        h.update(inspect.getsource(importlib.import_module(f"vitviz_core.studies_eval.{name}")).encode())
    return h.hexdigest()[:16]


def _data_key(data: Any) -> Any:
    from vitviz_core.evaluate.records import dataset_fingerprint

    if data is None or isinstance(data, (str, int, float)):
        return data
    try:
        return {"fingerprint": dataset_fingerprint(data), "n": len(data)}
    except ValueError:
        raise VitvizError(f"cannot cache a result on a {type(data).__name__}: it cannot be "
                          "fingerprinted (pass cache=False)") from None


def _model_key(model: Any) -> Any:
    module = getattr(model, "model", model)
    if isinstance(module, nn.Module):
        return {"info": model_info(model), "weights": weights_fingerprint(module)}
    return repr(model)


def cache_key(kind: str, models: Sequence[Any] = (), data: Any = None,
              settings: Mapping[str, Any] | None = None) -> str:
    """Hex key of a cached result: kind + models (info and weight hash) + data fingerprint
    + settings + the source code of the evaluation modules."""
    from vitviz_core.evaluate.records import jsonable

    spec = {"v": _CACHE_VERSION, "kind": kind, "code": _code_version(),
            "models": [_model_key(m) for m in models], "data": _data_key(data),
            "settings": jsonable(dict(settings or {}))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:24]


def cached(kind: str, compute: Callable[[], Any], *, models: Sequence[Any] = (), data: Any = None,
           settings: Mapping[str, Any] | None = None, enabled: bool = True) -> Any:
    """``compute()``, or its result from ``cache_dir()/studies/<kind>-<key>.pkl`` when the same
    models, data and settings were computed before. A corrupt cache file is recomputed."""
    from vitviz_core import config

    if not enabled:
        return compute()
    path = config.cache_dir() / "studies" / f"{kind}-{cache_key(kind, models, data, settings)}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except Exception:  # noqa: BLE001 - unreadable cache entry: recompute
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return value
