"""Sphinx extension of the vitviz book (``_config.yml``: ``sphinx.local_extensions``).

The execution-status table (``{nb-exec-table}`` on the status page) marks each chapter
with the emoji ✅ / ❌, which render as empty boxes on machines without an emoji font
(Debian's Chromium, for one). Here the status column says ``ok`` / ``failed`` in words.
"""

from __future__ import annotations

from typing import Any


def _status(value: Any) -> str:
    return "ok" if value is True else "failed"


def setup(app: Any) -> dict[str, Any]:
    from myst_nb.ext import execution_tables

    execution_tables._key2transform["succeeded"] = _status  # noqa: SLF001 - myst-nb has no option for it
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
