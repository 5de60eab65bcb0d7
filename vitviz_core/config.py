"""Where vitviz finds data, weights and its cache.

Nothing is hard-coded to one machine. Each location is chosen, in order, by an explicit
argument, an environment variable, and a default:

==================  =====================  ==============================================
what                environment variable   default
==================  =====================  ==============================================
shared folder       ``VITVIZ_SHARED``      ``../shared`` beside the checkout, if present
image data root     ``VITVIZ_DATA``        ``<shared>/data`` if present, else none
local weights       ``VITVIZ_WEIGHTS``     ``<shared>/weights`` if present (``os.pathsep``
                                           separates several folders or files)
cache               ``VITVIZ_CACHE``       ``$XDG_CACHE_HOME/vitviz`` or ``~/.cache/vitviz``
decode budget       ``VITVIZ_MAX_DECODE_PIXELS``  32 Mpixel (see ``images.decode_budget``)
==================  =====================  ==============================================

A cache location that cannot be a folder (a file, no permission) is a
:class:`~vitviz_core.errors.ConfigError` that names the variable, not a failure further on.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def shared_dir() -> Path | None:
    """The shared folder (data, weights) if one exists on this machine, else ``None``."""
    env = os.environ.get("VITVIZ_SHARED")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for start in (REPO_DIR, Path.cwd()):
        for parent in (start, *start.parents):
            candidate = parent.parent / "shared" if parent.name else None
            if candidate is not None and (candidate / "data").is_dir():
                return candidate.resolve()
    return None


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """Root folder of the image datasets (``imagenet-val-1300`` etc.), or ``None``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("VITVIZ_DATA")
    if env:
        return Path(env).expanduser()
    shared = shared_dir()
    if shared is not None and (shared / "data").is_dir():
        return shared / "data"
    return None


def weights_paths(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Folders or files that may hold local checkpoints, most specific first."""
    paths: list[Path] = []
    if explicit is not None:
        paths.append(Path(explicit).expanduser())
    env = os.environ.get("VITVIZ_WEIGHTS")
    if env:
        paths.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    shared = shared_dir()
    if shared is not None and (shared / "weights").is_dir():
        paths.append(shared / "weights")
    return paths


def cache_dir() -> Path:
    """The per-user cache folder (converted weights, exemplar search results); created."""
    env = os.environ.get("VITVIZ_CACHE")
    if env:
        path, origin = Path(env).expanduser(), f"VITVIZ_CACHE={env}"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = xdg or str(Path.home() / ".cache")
        path = Path(base) / "vitviz"
        origin = (
            f"the default cache folder {path} (XDG_CACHE_HOME={xdg})"
            if xdg
            else f"the default cache folder {path}"
        )
    hint = "set VITVIZ_CACHE to a folder you can write"
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "a file" if p.is_file() else "not a folder"
                where = "" if p == path else f" ({p} is {what})"
                raise ConfigError(
                    f"{origin} cannot be used as the cache: {path} is not a folder{where}; {hint}"
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{origin}: cannot create the cache folder {path} ({exc.strerror or exc}); {hint}"
        ) from exc
    return path
