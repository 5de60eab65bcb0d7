"""Browser tier: one chapter's explorer used live, in Voilà and headless Chromium.

Writes a small notebook that builds the feature-visualization chapter's
:class:`~vitviz_core.explorer.FeatureExplorer` with the package calls the chapter uses (on
``vit-ti16`` when its weights are in ../shared, next to a tiny random-init ViT; else two
tiny random-init ViTs; a tiny optimization budget and a generated exemplar pool), serves it
with Voilà on 127.0.0.1 and drives it with Playwright on Debian's ``chromium``: Render,
then change the model, layer and feature controls and Render again (all three at once,
then the layer alone, then the feature alone, then back to the first selection, which the
explorer serves from its cache). The figure (the <img> in the widget's output) must change,
the status line must name the new selection (so the browser's changes reached the kernel),
and no error output or traceback may appear. Every non-local request the page makes is blocked. The server is always stopped.
Screenshots of the three states go to ``_build/screenshots/widget_live_*.png`` (CI artifact).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_S = 150  # Voilà up, kernel started, models loaded, widget shown
RENDER_S = 90  # one Render click (optimization + exemplar search on CPU)
SHOTS = REPO / "_build" / "screenshots"
# Voilà's own page template links the Font Awesome icon CSS from a CDN; blocked here (the
# explorer uses no icons), so it is the one outside request tolerated.
VOILA_CDN = "https://cdn.jsdelivr.net/npm/@fortawesome/"

SETUP = """\
import numpy as np
import torch
from PIL import Image
from IPython.display import display

from vitviz_core.errors import VitvizError
from vitviz_core.explorer import FeatureExplorer
from vitviz_core.models import load_model

torch.set_num_threads(1)
pool_root = {pool_root!r}
tiny = dict(img_size=32, patch_size=8, embed_dim=32, num_heads=2, num_classes=10)
try:
    models = {{"vit-ti16": load_model("vit-ti16")}}
except VitvizError:
    models = {{"tiny-random-a": load_model("vit_tiny_patch16_224", weights="random", depth=2, **tiny)}}
torch.manual_seed(1)
models["tiny-random-b"] = load_model("vit_tiny_patch16_224", weights="random", depth=3, **tiny)
print("models:", {{k: m.weights_label for k, m in models.items()}})
"""

EXPLORER = """\
first = next(iter(models))
explorer = FeatureExplorer(models, "pool", pool_root=pool_root, steps=4, n_augment=1, k=2,
                           default=(first, 1, 0), recipe="paper")
display(explorer.widget())
"""


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(tmp_path: Path) -> Path:
    import nbformat
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    d = tmp_path / "pool" / "n01440764"
    d.mkdir(parents=True)
    for i in range(6):  # smooth random images, so exemplar maps differ
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 64), Image.BILINEAR).save(d / f"{i}.png")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP.format(pool_root=str(tmp_path))),
        nbformat.v4.new_code_cell(EXPLORER),
    ]
    path = tmp_path / "explorer.ipynb"
    nbformat.write(nb, path)
    return path


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"voila did not listen on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: voila and its kernel
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# the figure shown by the explorer's Output widget (base64 PNG in the <img> src)
FIGURE = ".widget-output img"
STATUS = ".widget-label"


def test_feature_explorer_live(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    _need(chromium is not None, "Debian's chromium is not installed (`make browser`)")
    _need(
        shutil.which("voila", path=str(Path(sys.executable).parent)) is not None or _importable("voila"),
        "voila is not installed (pip install voila; it is in requirements.txt)",
    )
    sync_api = pytest.importorskip("playwright.sync_api")

    nb = _write_notebook(tmp_path)
    port = _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        VITVIZ_CACHE=str(tmp_path / "cache"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        OMP_NUM_THREADS="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        HF_HUB_OFFLINE="1",
        MPLBACKEND="agg",
    )
    log = (tmp_path / "voila.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voila",
            str(nb),
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",
            "--VoilaConfiguration.show_tracebacks=True",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    blocked: list[str] = []
    try:
        _wait_port(port, proc, 60)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page_errors: list[str] = []
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                local = (f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")

                def offline(route) -> None:
                    if route.request.url.startswith(local) or not route.request.url.startswith(
                        ("http", "ws")
                    ):
                        route.continue_()
                    else:
                        blocked.append(route.request.url)
                        route.abort()

                page.route("**/*", offline)
                page.goto(f"http://127.0.0.1:{port}/", wait_until="commit", timeout=START_S * 1000)
                render = page.get_by_role("button", name="Render")
                render.wait_for(state="visible", timeout=START_S * 1000)
                models = page.locator(".widget-dropdown select").first.evaluate(
                    "s => Array.from(s.options).map(o => o.value)"
                )
                assert len(models) == 2, f"model dropdown options: {models}"
                depth0 = 12 if models[0] == "vit-ti16" else 2

                def rendered(before: str | None) -> str:
                    render.click()
                    # a new figure, or an error shown (then _no_errors says which, at once)
                    page.wait_for_function(
                        """([sel, before]) => { const i = document.querySelector(sel);
                             const text = document.body.innerText;
                             return (i && i.complete && i.naturalWidth > 100 && i.src !== before
                                     && text.includes('done in'))
                                    || text.includes('failed:') || text.includes('Traceback'); }""",
                        arg=[FIGURE, before],
                        timeout=RENDER_S * 1000,
                    )
                    _no_errors(page, page_errors)
                    shots.append(page.screenshot(full_page=True))
                    return page.locator(FIGURE).get_attribute("src")

                shots: list[bytes] = []

                first = rendered(None)
                assert first.startswith("data:image/png;base64,")
                # model, layer and feature controls, as a reader sets them
                page.locator(".widget-dropdown select").first.select_option(models[1])
                handle = page.locator(".widget-hslider .noUi-handle").first
                slider_max(handle, 2)  # the kernel resized the layer slider to the new model
                set_readout(page, 2)  # last block of the new model (depth 3)
                feature = page.locator(".widget-text input").first
                feature.fill("5")
                feature.press("Enter")
                second = rendered(first)
                assert second != first
                status = page.locator(STATUS, has_text="done in").first.inner_text()
                assert f"{models[1]} blocks.2.mlp.hook_post #5" in status, status
                # the layer control alone
                set_readout(page, 0)
                third = rendered(second)
                assert third != second
                status = page.locator(STATUS, has_text="done in").first.inner_text()
                assert f"{models[1]} blocks.0.mlp.hook_post #5" in status, status
                # the feature control alone
                feature.fill("7")
                feature.press("Enter")
                fourth = rendered(third)
                assert fourth != third
                status = page.locator(STATUS, has_text="done in").first.inner_text()
                assert f"{models[1]} blocks.0.mlp.hook_post #7" in status, status
                # back to the first selection: served from the explorer's cache, same figure
                page.locator(".widget-dropdown select").first.select_option(models[0])
                slider_max(handle, depth0 - 1)
                set_readout(page, 1)
                feature.fill("0")
                feature.press("Enter")
                again = rendered(fourth)
                status = page.locator(STATUS, has_text="done in").first.inner_text()
                assert status.endswith(f"{models[0]} blocks.1.mlp.hook_post #0 (cached)"), status
                assert again == first
                SHOTS.mkdir(parents=True, exist_ok=True)
                for i, png in enumerate(shots):
                    (SHOTS / f"widget_live_{i}.png").write_bytes(png)
                needed = sorted({u for u in blocked if not u.startswith(VOILA_CDN)})
                assert not needed, f"the page needs the network: {needed[:5]}"
            finally:
                browser.close()
    except Exception:
        log.flush()
        tail = (tmp_path / "voila.log").read_text(errors="replace")[-3000:]
        print(f"--- voila log (tail) ---\n{tail}\n--- blocked requests: {blocked[:10]}")
        raise
    finally:
        _stop(proc)
        log.close()


def slider_max(handle, value: int) -> None:
    """Wait until the slider's maximum (synced from the kernel) is ``value``."""
    handle.page.wait_for_function(
        "([h, v]) => parseFloat(h.getAttribute('aria-valuemax')) === v",
        arg=[handle.element_handle(), value],
        timeout=RENDER_S * 1000,
    )


def set_readout(page, value: int) -> None:
    """Type ``value`` into the layer slider's editable readout, as a reader can."""
    readout = page.locator(".widget-hslider .widget-readout").first
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([r, v]) => r.textContent.trim() === String(v)",
        arg=[readout.element_handle(), value],
        timeout=10_000,
    )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _no_errors(page, page_errors: list[str]) -> None:
    """No traceback, error or stderr output visible, no failed status, no JavaScript error."""
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"a traceback is shown:\n{text[-2000:]}"
    assert "failed:" not in text, f"the explorer reports a failure:\n{text[-2000:]}"
    errors = page.locator(
        '[data-mime-type="application/vnd.jupyter.stderr"], .jp-OutputArea-output.error, '
        ".output_error, .output_stderr"
    ).count()
    assert errors == 0, f"{errors} error/stderr outputs are shown:\n{text[-2000:]}"
    assert not page_errors, f"JavaScript errors: {page_errors}"
