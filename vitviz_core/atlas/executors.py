"""Where atlas tasks run: in this process (``local``) or on Ray actors (``ray``).

Both executors take a list of tasks and a callback ``done(task, payload)`` that the driver
uses to write each result as soon as it arrives, and show one progress bar (with ETA) over
tasks. The Ray executor starts a local Ray instance, or joins a cluster with ``address``, and
creates one actor per GPU (``num_gpus=1``), or per CPU slot when the cluster has no GPU. Each
actor loads the model once (:class:`~vitviz_core.atlas.tasks.Worker`); a task that fails for
any reason but bad input (a lost node, an out-of-memory kill...) is retried, up to
``retries`` times, on whichever actor is free. Ray is imported only when this executor starts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from vitviz_core.atlas.plan import AtlasJob, Task
from vitviz_core.atlas.tasks import Payload, Worker
from vitviz_core.errors import VitvizError

__all__ = ["LocalExecutor", "RayExecutor", "make_executor", "check_address"]

log = logging.getLogger(__name__)
Done = Callable[[Task, Payload], None]


def _bar(tasks: Sequence[Task], desc: str, progress: bool) -> Any:
    return tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress, leave=True)


class LocalExecutor:
    """Runs tasks one after another in this process (loads the model on first use)."""

    name = "local"

    def __init__(self, job: AtlasJob, device: str = "cpu", progress: bool = True) -> None:
        self.job, self.device, self.progress = job, device, progress
        self.worker: Worker | None = None
        self.workers = 1

    def run(self, tasks: Sequence[Task], done: Done, desc: str = "atlas") -> None:
        if self.worker is None:
            self.worker = Worker(self.job, self.device)
        with _bar(tasks, desc, self.progress) as bar:
            for task in tasks:
                bar.set_postfix_str(task.describe(), refresh=False)
                done(task, self.worker.run(task))
                bar.update(1)

    def close(self) -> None:
        self.worker = None


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear error when a Ray ``host:port`` (or ``ray://host:port``) address
    does not answer; ``"auto"`` is left to Ray."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise VitvizError(
            f"--address {address!r}: use host:port (e.g. 10.0.0.1:6379), ray://host:10001 or auto"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise VitvizError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
            "`ray start --head` or check the address"
        ) from None


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return _one_line(cause)
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


class RayExecutor:
    """Runs tasks on Ray actors, one per GPU or CPU slot (see the module docstring)."""

    name = "ray"

    def __init__(
        self,
        job: AtlasJob,
        address: str | None = None,
        workers: int | None = None,
        num_cpus: int | None = None,
        retries: int = 2,
        progress: bool = True,
    ) -> None:
        if workers is not None and workers < 1:
            raise VitvizError(f"--workers must be >= 1 (got {workers})")
        if address:
            check_address(address)
        try:
            import ray
        except ImportError:
            raise VitvizError(
                "--executor ray needs Ray: pip install 'vitviz-core[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self.job, self.retries, self.progress = job, retries, progress
        self.started_here = False
        self.actors: list[Any] = []
        self._init(address, workers, num_cpus)

    def _init(self, address: str | None, workers: int | None, num_cpus: int | None) -> None:
        ray = self.ray
        if ray.is_initialized():
            pass  # a caller (notebook, test) already connected: use that instance
        elif address:
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ...
                raise VitvizError(f"cannot join the Ray cluster at {address}: {_one_line(exc)}") from None
            self.started_here = True
        else:
            import vitviz_core

            pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(vitviz_core.__file__)))
            path = os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH", "")) if p)
            ray.init(
                num_cpus=num_cpus or workers or os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
            self.started_here = True
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        self.device = "cuda" if gpus else "cpu"
        slots = gpus or int(res.get("CPU", 1))
        self.workers = max(1, min(workers or slots, slots if gpus else 10**6))

    def _start_actors(self, n: int) -> None:
        ray = self.ray
        opts = {"num_gpus": 1, "num_cpus": 1} if self.device == "cuda" else {"num_cpus": 1}
        remote = ray.remote(Worker).options(max_restarts=self.retries, max_task_retries=0, **opts)
        new = [remote.remote(self.job, self.device, 1) for _ in range(n)]
        try:
            ray.get([a.ping.remote() for a in new])
        except Exception as exc:  # noqa: BLE001 - the actor's __init__ failed (weights, version...)
            raise VitvizError(f"a Ray worker could not start: {_one_line(exc)}") from None
        self.actors += new

    def run(self, tasks: Sequence[Task], done: Done, desc: str = "atlas") -> None:
        ray = self.ray
        want = min(self.workers, len(tasks))
        if len(self.actors) < want:
            self._start_actors(want - len(self.actors))
        queue = list(tasks)
        attempts: dict[str, int] = {}
        idle = list(self.actors)
        running: dict[Any, tuple[Task, Any]] = {}
        with _bar(tasks, f"{desc} ({len(self.actors)} Ray workers, {self.device})", self.progress) as bar:
            while queue or running:
                while queue and idle:
                    task, actor = queue.pop(0), idle.pop(0)
                    running[actor.run.remote(task)] = (task, actor)
                ready, _ = ray.wait(list(running), num_returns=1)
                ref = ready[0]
                task, actor = running.pop(ref)
                try:
                    payload = ray.get(ref)
                except VitvizError as exc:  # bad input: retrying cannot help
                    raise VitvizError(_one_line(exc)) from None
                except Exception as exc:  # noqa: BLE001 - lost worker, OOM kill, transient error
                    n = attempts[task.key] = attempts.get(task.key, 0) + 1
                    if n > self.retries:
                        raise VitvizError(
                            f"{task.describe()} failed {n} times; last error: {_one_line(exc)}"
                        ) from None
                    log.info("retrying %s after: %s", task.describe(), _one_line(exc))
                    queue.append(task)
                    time.sleep(0.5)
                    idle.append(actor)  # a dead actor restarts (max_restarts) or fails the retry
                    continue
                idle.append(actor)
                done(task, payload)
                bar.update(1)

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(
    kind: str,
    job: AtlasJob,
    *,
    device: str = "cpu",
    address: str | None = None,
    workers: int | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
) -> LocalExecutor | RayExecutor:
    """``"local"`` or ``"ray"`` (``address``/``workers``/``num_cpus`` only apply to Ray)."""
    if kind == "local":
        if address:
            raise VitvizError("--address needs --executor ray")
        return LocalExecutor(job, device=device, progress=progress)
    if kind == "ray":
        return RayExecutor(job, address=address, workers=workers, num_cpus=num_cpus, progress=progress)
    raise VitvizError(f"unknown --executor {kind!r}; use local or ray")
