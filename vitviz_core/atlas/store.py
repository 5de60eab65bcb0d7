"""The atlas results store: one record file per finished task, written atomically.

Layout under the output folder ``OUT``::

    OUT/store/<weights hash>/<kind>/<hook>/<file stem>.safetensors    the task's record
    OUT/store/<weights hash>/<kind>/<hook>/<file stem>/*.png          its images
    OUT/store/<weights hash>/merged/<key>.safetensors                 merged exemplars
    OUT/index.jsonl                                                    one line per neuron

The file stem holds the task's content address (:attr:`~vitviz_core.atlas.plan.Task.key`), a
hash of everything its result depends on, so a changed recipe or seed writes new entries and
never overwrites old ones. A record is a safetensors file: the arrays plus a JSON header entry
``record`` (task, result metadata) and ``run`` (timing, never compared). Images are PNG files,
written before the record; the record is the commit mark, so a task whose record exists is
finished, and a task killed half-way leaves at most orphan temp files or images that the
rerun rewrites byte for byte. Every write goes to a temporary file in the same folder and is
moved into place with :func:`os.replace`; files whose bytes would not change are not touched.
Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vitviz_core.atlas.plan import Task
from vitviz_core.atlas.tasks import Payload
from vitviz_core.errors import VitvizError

__all__ = ["ResultStore", "atomic_write", "check_writable", "store_digest", "read_record"]


def check_writable(out: str | os.PathLike) -> Path:
    """The output folder, created if missing, after a real test write (VitvizError if not)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise VitvizError(f"--out {str(path)!r} is a file; give a folder for the atlas")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".vitviz-write-test-"):
            pass
    except OSError as exc:
        raise VitvizError(f"output folder {str(path)!r} is not writable ({exc.strerror or exc})") from None
    return path


def atomic_write(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temp file + :func:`os.replace`; skip (return False)
    when the file already holds exactly these bytes."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class ResultStore:
    """Records of finished tasks under ``OUT/store/<weights hash>/``."""

    def __init__(self, out: str | os.PathLike, weights_hash: str) -> None:
        self.out = check_writable(out)
        self.root = self.out / "store" / weights_hash

    def record_path(self, task: Task) -> Path:
        return self.root / task.folder / f"{task.name}.safetensors"

    def files_dir(self, task: Task) -> Path:
        return self.root / task.folder / task.name

    def done(self, task: Task) -> bool:
        return self.record_path(task).is_file()

    def write(self, task: Task, payload: Payload, run: dict[str, Any] | None = None) -> Path:
        """Write a task's images, then its record (the commit mark)."""
        folder = self.files_dir(task)
        for name, data in sorted(payload.files.items()):
            atomic_write(folder / name, data)
        record = {
            "task": {
                "kind": task.kind,
                "key": task.key,
                "hook": task.hook,
                "features": list(task.features),
                "shard": list(task.shard) if task.shard else None,
            },
            "result": payload.meta,
            "files": sorted(payload.files),
        }
        path = self.record_path(task)
        atomic_write(
            path, encode_record(payload.arrays, record, run or {"seconds": round(payload.seconds, 3)})
        )
        return path

    def read(self, task: Task) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, record)`` of a finished task."""
        return read_record(self.record_path(task))

    def image_path(self, task: Task, name: str) -> Path:
        return self.files_dir(task) / name

    def merged_path(self, key: str) -> Path:
        return self.root / "merged" / f"exemplars-{key}.safetensors"


def encode_record(arrays: dict[str, np.ndarray], record: dict[str, Any], run: dict[str, Any]) -> bytes:
    """Safetensors bytes of ``arrays`` with the JSON ``record`` and ``run`` in its header."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if not arrays:
        arrays = {"_empty": np.zeros(0, np.float32)}
    return save(
        arrays,
        metadata={"record": json.dumps(record, sort_keys=True), "run": json.dumps(run, sort_keys=True)},
    )


def read_record(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, record)`` of a record file; ``record["run"]`` holds the timing."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys() if k != "_empty"}
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise VitvizError(f"cannot read atlas record {path.name} ({exc}); delete it and rerun") from None
    record = json.loads(meta.get("record", "{}"))
    record["run"] = json.loads(meta.get("run", "{}"))
    return arrays, record


def store_digest(out: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``out`` (records hashed without their
    ``run`` timing entry, temp files skipped): equal digests = identical stores and sites."""
    import hashlib

    out = Path(out)
    digest = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        h = hashlib.sha256()
        if path.suffix == ".safetensors":
            arrays, record = read_record(path)
            record.pop("run", None)
            h.update(json.dumps(record, sort_keys=True).encode())
            for k in sorted(arrays):
                h.update(f"{k}|{arrays[k].dtype}|{arrays[k].shape}".encode())
                h.update(np.ascontiguousarray(arrays[k]).tobytes())
        else:
            h.update(path.read_bytes())
        digest[path.relative_to(out).as_posix()] = h.hexdigest()
    return digest
