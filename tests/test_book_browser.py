r"""Browser tier: open every rendered chapter in headless Chromium and look at it.

Runs after the book is built (``make test`` builds it first). For each page of ``_toc.yml``
it checks the page loads, every image on it decoded, chapters show at least one figure, and
no error output or traceback is visible; it saves a full-page screenshot of each page under
``_build/screenshots/`` as a CI artifact. Uses Debian's ``chromium`` through Playwright (no
browser download), run as root with ``--no-sandbox`` and background networking disabled.

The book must work offline: every http(s) request a page makes is blocked (and reported),
formulas must be typeset by the book's own MathJax copy (MathJax output elements present,
no raw ``$...$`` / ``\(...\)`` TeX left in the text), and no page may contain the build
machine's absolute checkout, data, weights or cache paths.

``VITVIZ_BOOK_DIR`` points the test at another book project (its ``_toc.yml`` and
``_build/html``), e.g. a small scratch book built to check the configuration.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
BOOK = Path(os.environ.get("VITVIZ_BOOK_DIR") or REPO).resolve()
HTML = BOOK / "_build" / "html"
SHOTS = BOOK / "_build" / "screenshots"
# Pages that are prose and tables only; every other page must show a figure.
TEXT_ONLY = {"book/intro", "book/status"}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def toc_pages() -> list[str]:
    text = (BOOK / "_toc.yml").read_text()
    return re.findall(r"^root:\s*(\S+)", text, re.M) + re.findall(r"-\s*file:\s*(\S+)", text)


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def machine_paths() -> list[str]:
    """Absolute paths of this build machine that no published page may contain."""
    from vitviz_core import config

    paths = {REPO, BOOK, REPO.resolve(), Path.home() / ".cache"}
    for getter in (config.shared_dir, config.data_root):
        try:
            found = getter()
        except Exception:  # noqa: BLE001 - an unset location has nothing to leak
            found = None
        if found is not None:
            paths |= {Path(found), Path(found).resolve()}
    paths |= set(config.weights_paths())
    if os.environ.get("VITVIZ_CACHE"):
        paths.add(Path(os.environ["VITVIZ_CACHE"]))
    # "/work/main" must not match "/work/main2"; a bare "/" or "/tmp" says nothing
    return sorted({str(p).rstrip("/") + "/" for p in paths if p.is_absolute() and len(p.parts) > 2})


# raw TeX left in visible text: $...$, $$...$$, \(...\), \[...\]
RAW_TEX = re.compile(r"\$\$.+?\$\$|(?<![\w$])\$[^$\s][^$\n]*?\$(?![\w$])|\\\(.+?\\\)|\\\[.+?\\\]", re.S)
# emoji that Debian's Chromium (no emoji font) shows as empty boxes, e.g. the status table's ✅
EMOJI = re.compile("[\u2705\u274c\u2714\u2716\U0001f300-\U0001faff]")
# visible text of the page body without code (code cells may print dollars)
TEXT_JS = """() => {
  const main = document.querySelector('main').cloneNode(true);
  main.querySelectorAll('pre, code, .highlight, script, style, mjx-container, .MathJax').forEach(e => e.remove());
  return main.innerText;
}"""


@pytest.fixture(scope="module")
def browser():
    _need(HTML.is_dir(), f"book not built: {HTML} missing (run `make book`)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    _need(chromium is not None, "Debian's chromium is not installed (`make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.mark.parametrize("page_name", toc_pages())
def test_page_renders(browser, page_name: str) -> None:
    path = HTML / f"{page_name}.html"
    assert path.is_file(), f"{page_name}: {path} was not built"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    network: list[str] = []

    def offline(route) -> None:  # the book must not need the network: block and report it
        url = route.request.url
        if url.startswith(("http://", "https://")):
            network.append(url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", offline)
    page.goto(path.as_uri(), wait_until="load")
    title = page.locator("main h1").first.inner_text()
    assert title.strip(), f"{page_name}: no title"
    images = page.evaluate(
        "() => Array.from(document.querySelectorAll('main img')).map("
        "i => ({src: i.src.split('/').pop(), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))"
    )
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{page_name}: images failed to load: {broken}"
    if page_name not in TEXT_ONLY:
        figures = [i for i in images if i["w"] >= 100]
        assert figures, f"{page_name}: no figure on the page"
    text = page.locator("main").inner_text()
    assert "Traceback (most recent call last)" not in text, f"{page_name}: a traceback is shown"
    errors = page.locator("main .output.traceback, main .output.error, main .output.stderr").count()
    assert errors == 0, f"{page_name}: {errors} error/stderr output blocks are shown"
    # sphinx-thebe 0.3.1 registers its config script twice under jupyter-book 1.0.4; the
    # second copy fails harmlessly (live-code launch is not used offline). Anything else fails.
    console_errors = [e for e in console_errors if "THEBE_JS_URL" not in e]
    assert not console_errors, f"{page_name}: JavaScript errors: {console_errors}"
    # formulas: typeset by the local MathJax copy, none left as raw TeX
    mathjax = page.evaluate(
        "() => Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s))"
    )
    assert all(src.startswith("file:") for src in mathjax), (
        f"{page_name}: MathJax not served locally: {mathjax}"
    )
    n_math = page.locator("main .math").count()
    if n_math:
        assert mathjax, f"{page_name}: {n_math} formulas but no MathJax script"
        page.wait_for_function(
            "n => document.querySelectorAll('main mjx-container').length >= n", arg=n_math, timeout=20000
        )
    visible = page.evaluate(TEXT_JS)
    boxes = sorted(set(EMOJI.findall(visible)))
    assert not boxes, f"{page_name}: emoji without a font on Debian render as empty boxes: {boxes}"
    raw = RAW_TEX.findall(visible)
    assert not raw, f"{page_name}: formulas left as raw TeX: {raw[:3]}"
    assert not network, f"{page_name}: the page needs the network: {sorted(set(network))[:5]}"
    # no absolute path of the build machine (checkout, data, weights, cache) on a page
    # (the published HTML file and the text a reader sees; not the live DOM, where the
    # browser itself writes file:// URLs of the book's own fonts)
    html = path.read_text(encoding="utf-8", errors="replace") + page.locator("body").inner_text()
    leaks = [p for p in machine_paths() if p in html]
    assert not leaks, f"{page_name}: the page shows build-machine paths {leaks}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '_')}.png"), full_page=True)
    page.close()
