"""The book's chapters are prose + one ``parameters`` cell + calls into vitviz_core: no code
cell defines a function or class or runs a loop (comprehensions included), and no chapter
has more than 80 code lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("*.md"))
MAX_CODE_LINES = 80


def _code_cells(text: str) -> list[str]:
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
    return ["\n".join(line for line in c.splitlines() if not line.startswith(":")) for c in cells]


def _python(source: str) -> str:
    """The cell without IPython magics (``%matplotlib``), which are not Python."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_code_cells_hold_no_def_class_or_loop(path):
    banned = (
        ast.FunctionDef,
        ast.AsyncFunctionDef,
        ast.ClassDef,
        ast.For,
        ast.AsyncFor,
        ast.While,
        ast.comprehension,
        ast.Lambda,
    )
    for cell in _code_cells(path.read_text()):
        tree = ast.parse(_python(cell))
        found = sorted({type(node).__name__ for node in ast.walk(tree) if isinstance(node, banned)})
        assert not found, f"{path.name}: a code cell has {found}:\n{cell}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_at_most_80_code_lines_and_one_parameters_cell(path):
    text = path.read_text()
    lines = sum(1 for cell in _code_cells(text) for line in cell.splitlines() if line.strip())
    assert lines <= MAX_CODE_LINES, f"{path.name}: {lines} code lines"
    assert len(re.findall(r":tags: \[parameters\]", text)) <= 1


def test_the_check_sees_a_loop():
    cell = "x = 1\nfor i in range(3):\n    x += i\n"
    assert any(isinstance(n, ast.For) for n in ast.walk(ast.parse(cell)))
    assert _code_cells("```{code-cell} ipython3\n:tags: [x]\na = [i for i in b]\n```\n") == [
        "a = [i for i in b]"
    ]
