"""The chapter layer: one module per book chapter, each with
``run(models=None, profile="cpu", **overrides) -> ChapterResult``.

A chapter's notebook is prose, its ``parameters`` cell, one call to its module's ``run`` and
display calls; the benchmarks that print the same tables (``benchmarks/paper_tables.py``,
``benchmarks/neurons_results.py``) call the same ``run``, so each table has one code path.
Every profile knob a chapter uses lives in :class:`vitviz_core.profiles.Profile`.
"""

from __future__ import annotations

from vitviz_core.chapters.result import ChapterResult

#: The chapter modules, in book order (``vitviz_core.chapters.<name>.run``).
CHAPTERS: tuple[str, ...] = (
    "feature_visualization",
    "token_mixing",
    "vit_vs_cnn",
    "language_supervision",
    "model_families",
    "neurons",
    "atlas",
)

__all__ = ["CHAPTERS", "ChapterResult"]
