"""What a chapter's ``run`` returns: every number, table and figure of the chapter, named by
the glue key the book's prose uses, plus the line saying what produced them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChapterResult:
    """Everything one chapter computed.

    ``values`` holds numbers and short texts, ``tables`` pandas DataFrames, ``figures``
    matplotlib figures and ``widgets`` interactive explorers (each with a static default
    figure in ``figures``). Keys are the glue names the chapter's prose refers to.
    ``setting`` names the model(s), data and profile that produced every number.
    """

    chapter: str
    setting: str
    profile: Any                                   # vitviz_core.profiles.Profile
    values: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    widgets: dict[str, Any] = field(default_factory=dict)

    def glue(self) -> None:
        """Publish every value, table and figure to the book with ``myst_nb.glue`` (asked for
        explicitly by the notebook; nothing is displayed)."""
        from myst_nb import glue

        for group in (self.values, self.tables, self.figures):
            for name, obj in group.items():
                glue(name, obj, display=False)

    def numbers(self) -> dict[str, Any]:
        """The plain values and the tables as records, for benchmarks and JSON output."""
        out: dict[str, Any] = dict(self.values)
        for name, table in self.tables.items():
            out[name] = table.reset_index().to_dict(orient="records") if hasattr(table, "to_dict") else table
        return out
