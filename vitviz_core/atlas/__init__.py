"""The neuron atlas: every neuron of some hooks of a model, its feature visualization, its
top-k dataset exemplars with activation maps, and scores, as a resumable job and a static site.

    python -m vitviz_core atlas --model vit-ti16 --hooks 'blocks.*.mlp.hook_post' \\
        --features 0-63 --data imagenet-val-1300 --out atlas/ [--executor ray]

- :mod:`.plan`      the job, its tasks and their content addresses
- :mod:`.tasks`     the tasks as pure functions and the worker that runs them
- :mod:`.store`     the results store (atomic record files, PNGs, safetensors, index)
- :mod:`.executors` local (one process) and Ray (one actor per GPU or CPU slot)
- :mod:`.run`       :func:`run_atlas`: skip finished tasks, run the rest, merge, index, site
- :mod:`.scores`    :func:`neuron_scores`, the one place scores are computed
- :mod:`.site`      the static HTML site
- :mod:`.command`   the ``atlas`` command line
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy: ``python -m vitviz_core --help`` must not import torch through this package.
_EXPORTS = {
    "AtlasJob": "plan",
    "DataSpec": "plan",
    "ModelSpec": "plan",
    "Task": "plan",
    "match_hooks": "plan",
    "plan_job": "plan",
    "run_atlas": "run",
    "AtlasReport": "run",
    "neuron_scores": "scores",
    "ResultStore": "store",
    "store_digest": "store",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vitviz_core.atlas.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vitviz_core.atlas' has no attribute {name!r}")
