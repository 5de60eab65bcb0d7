"""Put chapters executed by the nbmake tier into Jupyter Book's execution cache.

CI executes every chapter once, with nbmake, on notebooks converted by jupytext. The book
build then reads the same chapters from their MyST sources; with ``execute_notebooks:
cache`` it re-executes any chapter whose code is not in the cache. This script copies the
outputs nbmake produced into the cache under the exact hash the book build will look up
(the notebook is re-read with myst-nb's own reader, so cell sources and metadata match),
with the execution time taken from nbmake's JUnit report. A chapter whose code cells do
not line up is skipped with a message, and the book build simply executes it again.

Usage: python scripts/seed_book_cache.py CACHE_DIR JUNIT_XML EXECUTED_DIR CHAPTER.md...
       python scripts/seed_book_cache.py --stale CACHE_DIR CHAPTER.md...
           (prints the chapters the cache does not hold yet: the ones `make book` executes)
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from myst_nb.core.read import read_myst_markdown_notebook
from myst_parser.config.main import MdParserConfig


def junit_times(path: Path) -> dict[str, float]:
    """Seconds per executed notebook stem, from pytest's JUnit XML."""
    times: dict[str, float] = {}
    if not path.is_file():
        return times
    for case in ET.parse(path).iter("testcase"):
        name = case.get("file") or case.get("classname") or case.get("name") or ""
        stem = Path(name.replace(".", "/") if not name.endswith(".ipynb") else name).stem
        if case.find("failure") is None and case.find("error") is None:
            times[Path(case.get("name", "")).stem or stem] = float(case.get("time", 0.0))
            times[stem] = float(case.get("time", 0.0))
    return times


def _read_chapter(chapter: Path) -> nbformat.NotebookNode:
    """The chapter as the book build reads it (myst-nb's reader), so hashes match."""
    return read_myst_markdown_notebook(
        chapter.read_text(), MdParserConfig(), add_source_map=True, path=chapter
    )


def stale(cache_dir: str, chapters: list[str]) -> int:
    """Print the chapters whose code is not in the execution cache yet."""
    cache = get_cache(cache_dir)
    for chapter in map(Path, chapters):
        try:
            cache.match_cache_notebook(_read_chapter(chapter))
        except KeyError:
            print(chapter.with_suffix(""))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--stale"]:
        return stale(argv[1], argv[2:])
    cache_dir, junit, executed_dir, *chapters = argv
    cache = get_cache(cache_dir)
    times = junit_times(Path(junit))
    for chapter in map(Path, chapters):
        executed = Path(executed_dir) / f"{chapter.stem}.ipynb"
        if not executed.is_file():
            print(f"seed: {chapter}: no executed notebook, the book build will execute it")
            continue
        source = _read_chapter(chapter)
        ran = nbformat.read(executed, as_version=4)
        src_cells = [c for c in source.cells if c.cell_type == "code"]
        ran_cells = [c for c in ran.cells if c.cell_type == "code"]
        if [c.source for c in src_cells] != [c.source for c in ran_cells]:
            print(f"seed: {chapter}: code cells differ from {executed}; not cached")
            continue
        for src, out in zip(src_cells, ran_cells):
            src.outputs = out.get("outputs", [])
            src.execution_count = out.get("execution_count")
        source.metadata["kernelspec"] = source.metadata.get("kernelspec") or ran.metadata.get("kernelspec")
        seconds = times.get(chapter.stem)
        tmp = executed.with_suffix(".seed.ipynb")
        nbformat.write(source, tmp)
        cache.cache_notebook_file(
            str(tmp),
            uri=str(chapter.resolve()),
            check_validity=False,
            overwrite=True,
            data={"execution_seconds": seconds},
        )
        print(f"seed: {chapter} cached ({seconds if seconds is not None else '?'} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
