"""On-disk cache of chapter results: :mod:`vitviz_core.cache` (``.npz`` + JSON, never pickle)
under ``config.cache_dir()/studies``, keyed by the models' weights, the data, the settings and
the source code of the modules that compute chapter numbers."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from vitviz_core.cache import _CACHE_VERSION, code_version, dumps, loads
from vitviz_core.cache import cache_key as _cache_key
from vitviz_core.cache import cached as _cached

__all__ = ["cached", "cache_key", "dumps", "loads", "COMPUTING", "_CACHE_VERSION"]

FOLDER = "studies"

#: Modules of this package whose code decides cached chapter numbers (their plots change no
#: number, but are hashed with them: a cached result is never older than the code that made it).
COMPUTING = (
    "vitviz_core.models",
    "vitviz_core.evaluate.common",
    "vitviz_core.evaluate.fill",
    "vitviz_core.evaluate.frequency",
    "vitviz_core.evaluate.masking",
    "vitviz_core.evaluate.probe",
    "vitviz_core.evaluate.stats",
    "vitviz_core.evaluate.token_mixing",
    "vitviz_core.studies_eval.token_study",
    "vitviz_core.studies_eval.foreground",
    "vitviz_core.studies_eval.masking_study",
    "vitviz_core.studies_eval.background",
    "vitviz_core.studies_eval.frequency_study",
)


def _code_version() -> str:
    return code_version(COMPUTING)


def cache_key(
    kind: str, models: Sequence[Any] = (), data: Any = None, settings: Mapping[str, Any] | None = None
) -> str:
    """Hex key of a cached chapter result (see :func:`vitviz_core.cache.cache_key`)."""
    return _cache_key(kind, models, data, settings, _code_version())


def cached(
    kind: str,
    compute: Callable[[], Any],
    *,
    models: Sequence[Any] = (),
    data: Any = None,
    settings: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> Any:
    """``compute()``, or its result from ``cache_dir()/studies/<kind>-<key>.npz``
    (:func:`vitviz_core.cache.cached` with this module's code version)."""
    return _cached(
        kind,
        compute,
        folder=FOLDER,
        models=models,
        data=data,
        settings=settings,
        code=_code_version() if enabled else "",
        enabled=enabled,
    )
