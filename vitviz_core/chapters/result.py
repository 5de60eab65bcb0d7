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
    profile: Any  # vitviz_core.profiles.Profile
    values: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    widgets: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(
        default_factory=dict
    )  # the underlying study results, for benchmarks and tests

    def glue(self) -> None:
        """Publish every value, table and figure to the book with ``myst_nb.glue`` (asked for
        explicitly by the notebook; nothing is displayed)."""
        from myst_nb import glue

        for group in (self.values, self.tables, self.figures):
            for name, obj in group.items():
                glue(name, obj, display=False)

    def show(self, *names: str) -> None:
        """Display the named tables (book style: no index), figures and texts (as Markdown), in
        order; names this run did not produce are skipped (e.g. a section the profile leaves out)."""
        from IPython.display import Markdown, display

        from vitviz_core.studies_eval.helpers import styled

        for name in names:
            if name in self.tables:
                display(styled(self.tables[name]))
            elif name in self.figures:
                display(self.figures[name])
            elif name in self.values:
                display(Markdown(str(self.values[name])))

    def explore(self, name: str) -> Any:
        """Display the interactive explorer ``name`` and return its static default figure (what
        a built page without a kernel shows)."""
        from IPython.display import display

        explorer = self.widgets[name]
        display(explorer.widget())
        return explorer.default_figure()

    def numbers(self) -> dict[str, Any]:
        """The plain values and the tables as records, for benchmarks and JSON output."""
        out: dict[str, Any] = dict(self.values)
        for name, table in self.tables.items():
            out[name] = table.reset_index().to_dict(orient="records") if hasattr(table, "to_dict") else table
        return out
