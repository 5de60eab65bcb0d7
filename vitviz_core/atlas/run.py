"""Run an atlas job: skip finished tasks, execute the rest, merge exemplars, index, site.

:func:`run_atlas` is the whole job. Phase 1 runs the visualization tasks and the exemplar
shard tasks that have no record yet; the driver then merges the shards' top-k with
``TopKState.merge`` (cheap, no model) into one record; phase 2 runs the activation-map tasks
of the merged exemplars. The executor starts only when some task is left, so a rerun of a
finished job starts neither Ray nor a model on a worker. Finally the index
(``OUT/index.jsonl``, every neuron of every visualization record in the store, with its
:func:`~vitviz_core.atlas.scores.neuron_scores`) and the static site of this job are
written; both are rewritten only where their bytes change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitviz_core.atlas.executors import make_executor
from vitviz_core.atlas.plan import AtlasJob, Task, merged_key, plan_maps, plan_phase1
from vitviz_core.atlas.scores import neuron_scores
from vitviz_core.atlas.store import ResultStore, atomic_write, encode_record, read_record
from vitviz_core.atlas.tasks import Payload

__all__ = ["AtlasReport", "run_atlas", "merge_exemplars", "collect_neurons"]


@dataclass
class AtlasReport:
    """What a run did."""

    out: Path
    tasks_total: int
    tasks_run: list[str] = field(default_factory=list)  # task keys executed in this run
    tasks_skipped: int = 0
    executor_started: bool = False
    workers: int = 0
    seconds: float = 0.0
    neurons: list[dict[str, Any]] = field(default_factory=list)  # see collect_neurons
    task_seconds: dict[str, float] = field(default_factory=dict)  # kind -> summed task wall time

    def summary(self) -> str:
        ran = len(self.tasks_run)
        busy = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.task_seconds.items()))
        return (
            f"atlas: {len(self.neurons)} neurons, {ran} task(s) run, {self.tasks_skipped} already done, "
            f"{self.seconds:.1f} s"
            + (f" (task time: {busy})" if busy else "")
            + f"; open {self.out / 'index.html'}"
        )


def merge_exemplars(
    job: AtlasJob, store: ResultStore, shards: list[Task]
) -> dict[str, dict[str, np.ndarray]]:
    """Merge every shard's top-k into the job's top-k (written once as a record; read back on
    reruns): ``{hook: {"values": (k, F), "indices": (k, F), "maps": (k, F, h, w)}}``."""
    from vitviz_core.evaluate.exemplars import FeatureTopK, TopKState

    path = store.merged_path(merged_key(job))
    if not path.is_file():
        merged: dict[str, TopKState] = {}
        for task in shards:
            arrays, _ = store.read(task)
            for hook in job.hooks:
                part = FeatureTopK(
                    values=torch.from_numpy(arrays[f"{hook}/values"]),
                    indices=torch.from_numpy(arrays[f"{hook}/indices"]),
                    maps=torch.from_numpy(arrays[f"{hook}/maps"]),
                )
                state = TopKState.from_topk(part, k=job.k)
                state.seen = task.shard[1] - task.shard[0]
                merged[hook] = merged[hook].merge(state) if hook in merged else state
        arrays = {}
        for hook in job.hooks:
            r = merged[hook].result()
            arrays.update(
                {
                    f"{hook}/values": r.values.numpy(),
                    f"{hook}/indices": r.indices.numpy(),
                    f"{hook}/maps": r.maps.numpy(),
                }
            )
        record = {
            "task": {"kind": "merged", "key": merged_key(job), "shards": [t.key for t in shards]},
            "result": {"features": {h: list(f) for h, f in zip(job.hooks, job.features)}},
            "files": [],
        }
        atomic_write(path, encode_record(arrays, record, {}))
    arrays, _ = read_record(path)
    return {h: {n: arrays[f"{h}/{n}"] for n in ("values", "indices", "maps")} for h in job.hooks}


def run_atlas(
    job: AtlasJob,
    out: str | Path,
    *,
    executor: str = "local",
    device: str = "cpu",
    address: str | None = None,
    workers: int | None = None,
    num_cpus: int | None = None,
    site: bool = True,
    progress: bool = True,
) -> AtlasReport:
    """Run (or resume) ``job`` into the folder ``out``; see the module docstring."""
    t0 = time.perf_counter()
    store = ResultStore(out, job.weights_hash)
    phase1 = plan_phase1(job)
    report = AtlasReport(out=store.out, tasks_total=len(phase1))
    ex = None

    def done(task: Task, payload: Payload) -> None:
        store.write(task, payload, {"seconds": round(payload.seconds, 3), "executor": ex.name})
        report.tasks_run.append(task.key)
        report.task_seconds[task.kind] = report.task_seconds.get(task.kind, 0.0) + payload.seconds

    def execute(tasks: list[Task], desc: str) -> None:
        nonlocal ex
        todo = [t for t in tasks if not store.done(t)]
        report.tasks_skipped += len(tasks) - len(todo)
        if not todo:
            return
        if ex is None:
            ex = make_executor(
                executor,
                job,
                device=device,
                address=address,
                workers=workers,
                num_cpus=num_cpus,
                progress=progress,
            )
            report.executor_started = True
            report.workers = ex.workers
        ex.run(todo, done, desc)

    try:
        execute(phase1, "atlas: visualizations + exemplar shards")
        merged = merge_exemplars(job, store, [t for t in phase1 if t.kind == "exemplars"])
        maps = plan_maps(job, {h: merged[h]["indices"] for h in job.hooks})
        report.tasks_total += len(maps)
        execute(maps, "atlas: activation maps")
    finally:
        if ex is not None:
            ex.close()
    report.neurons = collect_neurons(job, store, phase1, maps, merged)
    write_index(store)
    if site:
        from vitviz_core.atlas.site import build_site

        build_site(job, report.neurons, store.out)
    report.seconds = time.perf_counter() - t0
    return report


def collect_neurons(
    job: AtlasJob,
    store: ResultStore,
    phase1: list[Task],
    maps: list[Task],
    merged: dict[str, dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """One dict per neuron of this job: hook, feature, scores, image paths relative to ``out``."""
    rel = lambda p: p.relative_to(store.out).as_posix()  # noqa: E731
    vis = {}
    for task in phase1:
        if task.kind != "vis":
            continue
        arrays, _ = store.read(task)
        for i, f in enumerate(task.features):
            vis[(task.hook, f)] = (
                float(arrays["clean_activation"][i]),
                _natural(arrays, i),
                rel(store.image_path(task, f"f{f:05d}.png")),
                rel(store.image_path(task, f"f{f:05d}.thumb.png")),
                [float(v) for v in arrays["history"][:, i]],
            )
    neurons = []
    for task in maps:
        _, record = store.read(task)
        feats = job.features_of(task.hook)
        for f in task.features:
            values = merged[task.hook]["values"][:, feats.index(f)]
            clean, natural, image, thumb, history = vis[(task.hook, f)]
            exemplars = []
            for j, e in enumerate(record["result"]["exemplars"][str(f)]):
                exemplars.append(
                    {
                        **e,
                        "activation": float(values[j]),
                        "image": rel(store.image_path(task, f"f{f:05d}.ex{j}.png")),
                        "overlay": rel(store.image_path(task, f"f{f:05d}.ov{j}.png")),
                    }
                )
            neurons.append(
                {
                    "hook": task.hook,
                    "feature": f,
                    "scores": neuron_scores(clean, values, natural),
                    "image": image,
                    "thumb": thumb,
                    "history": history,
                    "exemplars": exemplars,
                }
            )
    return neurons


def _natural(arrays: dict[str, Any], i: int) -> float | None:
    """The i-th visualization's spectral naturalness (records written before it existed: None)."""
    return float(arrays["naturalness"][i]) if "naturalness" in arrays else None


def write_index(store: ResultStore) -> Path:
    """``OUT/index.jsonl``: one line per neuron of every visualization record in the store
    (all recipes and seeds run into this folder), with its scores; exemplar scores come from
    the merged exemplars of the same features when the store has them."""
    merged: dict[tuple[str, int], np.ndarray] = {}
    for path in sorted((store.root / "merged").glob("*.safetensors")):
        arrays, record = read_record(path)
        for name, values in arrays.items():
            hook, _, what = name.rpartition("/")
            if what == "values":
                for col, f in enumerate(_merged_features(record, arrays, hook)):
                    merged.setdefault((hook, f), values[:, col])
    lines = []
    for path in sorted((store.root / "vis").rglob("*.safetensors")):
        arrays, record = read_record(path)
        task, res = record["task"], record["result"]
        spec = res.get("spec", {})
        for i, f in enumerate(task["features"]):
            lines.append(
                {
                    "weights": store.root.name,
                    "hook": task["hook"],
                    "feature": f,
                    **spec,
                    "task": task["key"],
                    "image": (path.parent / path.stem / f"f{f:05d}.png").relative_to(store.out).as_posix(),
                    "scores": neuron_scores(
                        float(arrays["clean_activation"][i]),
                        merged.get((task["hook"], f)),
                        _natural(arrays, i),
                    ),
                }
            )
    lines.sort(key=lambda d: (d["hook"], d["feature"], d["task"]))
    out = store.out / "index.jsonl"
    atomic_write(out, "".join(json.dumps(d, sort_keys=True) + "\n" for d in lines).encode())
    return out


def _merged_features(record: dict[str, Any], arrays: dict[str, np.ndarray], hook: str) -> list[int]:
    return list(record.get("result", {}).get("features", {}).get(hook, []))
