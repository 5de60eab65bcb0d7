"""Job planning: what an atlas job is, and the tasks it splits into.

An :class:`AtlasJob` is everything that determines an atlas: the model (a :class:`ModelSpec`
any worker can load, plus the hash of its weights), the hooks and their features, the data
(a :class:`DataSpec` plus a portable fingerprint of its file list), the visualization recipe,
step count, augmentations and seed, ``k`` exemplars per neuron, and the chunk and shard sizes.
The job splits into :class:`Task` s (:func:`plan_phase1`, :func:`plan_maps`):

- ``vis``: one hook and a chunk of its features -> their feature visualizations;
- ``exemplars``: one shard of the dataset (a fixed index range) -> the top-k images of every
  job feature of every job hook, in one pass (merged later with ``TopKState.merge``);
- ``maps``: one hook and a chunk of features -> thumbnails and activation-map overlays of
  the merged top-k exemplars.

Each task carries a content address (:attr:`Task.key`): a hash of everything its result
depends on (weights hash, hook, features, recipe, seed, data fingerprint, shard, vitviz
version...). Chunks and shards are fixed by the plan, never by the number of workers, and
every feature draws its random numbers from its own seeded stream, so a task's result does
not depend on where or next to what it ran.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vitviz_core.errors import HookError, VitvizError

__all__ = [
    "ModelSpec",
    "DataSpec",
    "AtlasJob",
    "Task",
    "parse_feature_spec",
    "match_hooks",
    "plan_job",
    "plan_phase1",
    "plan_maps",
    "task_key",
]

KINDS = ("vis", "exemplars", "maps")
_GLOB_CHARS = set("*?[")


def task_key(spec: dict[str, Any]) -> str:
    """A short content address (hex) of a JSON-able description."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelSpec:
    """How any worker loads the model: a name for :func:`vitviz_core.models.load_model`, the
    ``weights`` keyword or path, extra ``timm.create_model`` arguments, and for random weights
    the seed of their initialisation (so every worker builds the same random model)."""

    name: str
    weights: str = "auto"
    timm_kwargs: tuple[tuple[str, Any], ...] = ()
    init_seed: int = 0

    def load(self, device: str = "cpu") -> Any:
        """The :class:`~vitviz_core.models.LoadedModel` on ``device``."""
        import torch

        from vitviz_core.models import load_model

        kwargs = dict(self.timm_kwargs)
        if self.weights == "random":  # timm's init draws from the global RNG: seed it, locally
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.init_seed)
                return load_model(self.name, weights="random", device=device, **kwargs)
        return load_model(self.name, weights=self.weights, device=device, **kwargs)


@dataclass(frozen=True)
class DataSpec:
    """An image folder found by :func:`vitviz_core.data.find_dataset` (name or path, optional
    data root) and an optional evenly spread subset of ``max_images``."""

    name: str
    root: str | None = None
    max_images: int | None = None

    def dataset(self, loaded: Any, pixels: bool = False) -> Any:
        """The :class:`~vitviz_core.data.ImageFolderDataset` in the model's input view
        (normalised) or, with ``pixels``, its pixel view in [0, 1]."""
        from vitviz_core.data import ImageFolderDataset, find_dataset

        transform = loaded.pixel_transform() if pixels else loaded.eval_transform()
        return ImageFolderDataset(
            find_dataset(self.name, self.root), transform=transform, max_images=self.max_images
        )


def data_fingerprint(dataset: Any) -> tuple[str, list[str]]:
    """A portable hash of a file-backed dataset (paths relative to its root, sizes, labels),
    and those relative paths. Unlike :func:`vitviz_core.evaluate.dataset_fingerprint` it holds
    no absolute path nor mtime, so a copy of the data on another node or machine hashes alike."""
    root = Path(dataset.root)
    h = hashlib.sha256()
    rel = []
    for path, label in dataset.samples:
        r = Path(path).relative_to(root).as_posix()
        rel.append(r)
        h.update(f"{r}|{os.path.getsize(path)}|{label}\n".encode())
    return h.hexdigest()[:16], rel


def parse_feature_spec(text: str, channels: int, hook: str) -> tuple[int, ...]:
    """``"all"``, ``"0-63"``, ``"3,7,42"`` -> feature indices checked against ``channels``."""
    from vitviz_core.render import parse_features

    if str(text).strip().lower() == "all":
        return tuple(range(channels))
    feats = parse_features(text)
    bad = [f for f in feats if f >= channels]
    if bad:
        raise HookError(
            f"--features {text}: feature {bad[0]} is out of range for {hook}, which has "
            f"{channels} channels (0-{channels - 1})"
        )
    return tuple(feats)


def match_hooks(model: Any, pattern: str) -> list[str]:
    """Canonical hook names of ``model`` matched by a glob (``'blocks.*.mlp.hook_post'``); a
    comma separates several patterns. A pattern without wildcards may also be a raw module path.

    Raises HookError for an unknown name or a glob that matches nothing."""
    from vitviz_core.hooks import list_hooks, resolve_hook

    names = [s.name for s in list_hooks(model)]
    out: list[str] = []
    for pat in [p.strip() for p in str(pattern).split(",")]:
        if not pat:
            raise HookError(f"empty hook pattern in {pattern!r}")
        if not _GLOB_CHARS & set(pat):
            resolve_hook(model, pat)  # raises HookError naming the closest valid names
            out.append(pat)
            continue
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            examples = ", ".join(n for n in names if "mlp.hook_post" in n)[:160] or ", ".join(names[:6])
            raise HookError(
                f"hook pattern {pat!r} matches no hook of this model "
                f"(e.g. {examples}; list them with `python -m vitviz_core hooks MODEL`)"
            )
        out += hits
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Task:
    """One idempotent unit of work; ``key`` addresses its result in the store."""

    kind: str  # "vis" | "exemplars" | "maps"
    key: str
    hook: str | None = None  # vis, maps
    features: tuple[int, ...] = ()  # vis, maps
    shard: tuple[int, int] | None = None  # exemplars: [start, stop) dataset indices
    exemplars: tuple[tuple[int, ...], ...] = ()  # maps: top-k dataset indices per feature

    @property
    def name(self) -> str:
        """Readable file stem: kind, hook, features or shard, key."""
        if self.kind == "exemplars":
            return f"shard{self.shard[0]:07d}-{self.shard[1]:07d}-{self.key}"
        return f"f{self.features[0]:05d}-{self.features[-1]:05d}-{self.key}"

    @property
    def folder(self) -> str:
        return self.kind if self.hook is None else f"{self.kind}/{self.hook}"

    def describe(self) -> str:
        if self.kind == "exemplars":
            return f"exemplars of images {self.shard[0]}-{self.shard[1] - 1}"
        return f"{self.kind} {self.hook} #{self.features[0]}-{self.features[-1]}"


@dataclass(frozen=True)
class AtlasJob:
    """Everything that determines an atlas (see the module docstring)."""

    model: ModelSpec
    hooks: tuple[str, ...]
    features: tuple[tuple[int, ...], ...]  # per hook, in the order of ``hooks``
    channels: tuple[int, ...]  # per hook
    data: DataSpec
    weights_hash: str
    data_key: str
    n_images: int
    recipe: str = "maco"
    steps: int | None = None  # None: the recipe's
    n_augment: int | None = None  # None: the recipe's
    seed: int = 0
    k: int = 9
    chunk: int = 8  # features per vis / maps task
    shard_size: int = 256  # images per exemplar task
    batch_size: int = 32  # images per forward pass in exemplar tasks
    version: str = ""
    model_label: str = ""  # e.g. "vit-ti16 (vit_tiny_patch16_224)"
    files: tuple[str, ...] = field(default=(), repr=False)  # dataset files relative to its root

    def features_of(self, hook: str) -> tuple[int, ...]:
        return self.features[self.hooks.index(hook)]

    def recipe_dict(self) -> dict[str, Any]:
        from vitviz_core.recipes import get_recipe

        return get_recipe(self.recipe, steps=self.steps, n_augment=self.n_augment).to_dict()

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (no machine paths) for the site and the index."""
        rec = self.recipe_dict()
        return {
            "model": self.model_label,
            "weights_hash": self.weights_hash,
            "hooks": list(self.hooks),
            "n_neurons": sum(len(f) for f in self.features),
            "data": Path(self.data.name).name,
            "n_images": self.n_images,
            "recipe": self.recipe,
            "steps": rec["steps"],
            "n_augment": rec["n_augment"],
            "seed": self.seed,
            "k": self.k,
            "vitviz": self.version,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("files")
        return d


def plan_job(
    model: ModelSpec,
    hooks: str,
    features: str,
    data: DataSpec,
    *,
    recipe: str = "maco",
    steps: int | None = None,
    n_augment: int | None = None,
    seed: int = 0,
    k: int = 9,
    chunk: int = 8,
    shard_size: int = 256,
    batch_size: int = 32,
    loaded: Any = None,
) -> AtlasJob:
    """Check every argument and build the :class:`AtlasJob` (loads the model once, on the CPU,
    unless ``loaded`` is given, to hash its weights and resolve the hook pattern).

    Raises VitvizError / HookError / DataError with a one-line message for bad input."""
    import vitviz_core
    from vitviz_core.evaluate.records import weights_fingerprint
    from vitviz_core.hooks import resolve_hook
    from vitviz_core.recipes import get_recipe

    for name, value, low in (
        ("--steps", steps, 1),
        ("--n-augment", n_augment, 1),
        ("--k", k, 1),
        ("--chunk", chunk, 1),
        ("--shard-size", shard_size, 1),
        ("--batch-size", batch_size, 1),
        ("--seed", seed, 0),
    ):
        if value is not None and (not isinstance(value, int) or value < low):
            raise VitvizError(f"{name} must be an integer >= {low} (got {value!r})")
    get_recipe(recipe, steps=steps, n_augment=n_augment)  # unknown recipe -> VitvizError
    if loaded is None:
        loaded = model.load("cpu")
    hook_names = match_hooks(loaded.model, hooks)
    specs = [resolve_hook(loaded.model, h) for h in hook_names]
    for s in specs:
        if s.layout == "BHLL":
            raise HookError(
                f"hook {s.name!r} holds attention probabilities, which have no channels to "
                "visualize; pick token hooks such as blocks.*.mlp.hook_post"
            )
    feats = tuple(parse_feature_spec(features, s.channels, s.name) for s in specs)
    dataset = data.dataset(loaded)
    data_key, files = data_fingerprint(dataset)
    init = "" if loaded.pretrained else ", random init"
    return AtlasJob(
        model=model,
        hooks=tuple(hook_names),
        features=feats,
        channels=tuple(s.channels for s in specs),
        data=data,
        weights_hash=weights_fingerprint(loaded.model),
        data_key=data_key,
        n_images=len(dataset),
        recipe=recipe,
        steps=steps,
        n_augment=n_augment,
        seed=seed,
        k=k,
        chunk=chunk,
        shard_size=shard_size,
        batch_size=batch_size,
        version=vitviz_core.__version__,
        model_label=f"{loaded.name} ({loaded.arch}{init})",
        files=tuple(files),
    )


def _chunks(seq: Sequence[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i : i + size]) for i in range(0, len(seq), size)]


def _base(job: AtlasJob, kind: str) -> dict[str, Any]:
    return {"kind": kind, "vitviz": job.version, "weights": job.weights_hash}


def exemplar_spec(job: AtlasJob) -> dict[str, Any]:
    """What every exemplar result depends on (the shard aside)."""
    return {
        **_base(job, "exemplars"),
        "hooks": {h: list(f) for h, f in zip(job.hooks, job.features)},
        "data": job.data_key,
        "k": job.k,
        "stat": "mean",
        "batch_size": job.batch_size,
    }


def plan_phase1(job: AtlasJob) -> list[Task]:
    """The visualization tasks and the exemplar shard tasks (independent of each other)."""
    tasks = []
    recipe = job.recipe_dict()
    for hook, feats in zip(job.hooks, job.features):
        for part in _chunks(feats, job.chunk):
            spec = {
                **_base(job, "vis"),
                "hook": hook,
                "features": list(part),
                "recipe": recipe,
                "seed": job.seed,
            }
            tasks.append(Task("vis", task_key(spec), hook=hook, features=part))
    ex = exemplar_spec(job)
    for start in range(0, job.n_images, job.shard_size):
        shard = (start, min(start + job.shard_size, job.n_images))
        tasks.append(Task("exemplars", task_key({**ex, "shard": list(shard)}), shard=shard))
    return tasks


def merged_key(job: AtlasJob) -> str:
    """Address of the merged exemplars (all shards of this job's exemplar configuration)."""
    return task_key(
        {**exemplar_spec(job), "n_images": job.n_images, "shard_size": job.shard_size, "merged": True}
    )


def plan_maps(job: AtlasJob, top_indices: dict[str, Any]) -> list[Task]:
    """Thumbnail + activation-map tasks, given the merged top-k dataset indices per hook
    (``{hook: (k, F) int array}``; entries < 0 are empty slots and are dropped)."""
    tasks = []
    mkey = merged_key(job)
    for hook, feats in zip(job.hooks, job.features):
        idx = top_indices[hook]
        col = {f: i for i, f in enumerate(feats)}
        for part in _chunks(feats, job.chunk):
            ex = tuple(tuple(int(v) for v in idx[:, col[f]] if v >= 0) for f in part)
            spec = {
                **_base(job, "maps"),
                "hook": hook,
                "features": list(part),
                "merged": mkey,
                "exemplars": [list(e) for e in ex],
            }
            tasks.append(Task("maps", task_key(spec), hook=hook, features=part, exemplars=ex))
    return tasks
