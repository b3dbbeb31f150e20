"""The course as a student uses it: JupyterLab in headless Chromium runs a lesson and moves its slider.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package, both installed by
``.ci/run``; Playwright never downloads a browser of its own here.  Screenshots are kept in
``$FMCLS_ARTIFACTS`` (default ``.artifacts/``).
"""
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fmcls_lib import course

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FMCLS_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

if sync_playwright is None or not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium and the playwright package (see .ci/run)")
    pytest.skip("browser test needs /usr/bin/chromium and playwright (installed by .ci/run)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback over smoke-parameterised copies of the lessons; stopped afterwards."""
    root = tmp_path_factory.mktemp("lab")
    course.prepare("smoke", root, {"interactive": True})  # smoke sizes, live widgets
    port, token = _free_port(), secrets.token_hex(16)
    settings = root / "_settings"  # render every cell (no windowing) and ask nothing about news
    for ext, conf in (("notebook-extension/tracker", {"windowingMode": "none"}),
                      ("apputils-extension/notification", {"fetchNews": "false"})):
        f = settings / "@jupyterlab" / f"{ext}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(conf))
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
         f"--LabApp.workspaces_dir={root / '_workspaces'}",  # never restore a user's open tabs
         "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "JUPYTER_PLATFORM_DIRS": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("JupyterLab did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(1)
    yield url, token, root
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _kernels_idle(url, token) -> bool:
    with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5) as r:
        kernels = json.load(r)
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


def _run_all(page, url, token, root, lesson, timeout_s=600):
    """Open the lesson, Run > Run All Cells, wait until the kernel is idle, save, check the saved outputs."""
    page.goto(f"{url}/lab/tree/{lesson}.ipynb?reset&token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("() => document.body.innerText.includes('Idle')", timeout=90_000)
    page.keyboard.press("Escape")
    page.click("text=Run", timeout=30_000)
    page.click("text=Run All Cells", timeout=30_000)
    deadline = time.time() + timeout_s
    while True:  # done when every code cell shows an execution count and the kernel is idle
        prompts = [p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts) and _kernels_idle(url, token):
            break
        assert time.time() < deadline, f"{lesson} did not finish running in {timeout_s} s"
        page.wait_for_timeout(1000)
    page.keyboard.press("Control+s")
    page.wait_for_timeout(3000)
    nb = json.loads((Path(root) / f"{lesson}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{lesson}: not every cell ran"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{lesson} shows error outputs: {[e.get('ename') for e in errors]}"


def _slider_changes_figure(page, label, lesson, presses=4):
    slider = page.locator(".widget-slider, .widget-hslider").filter(has_text=label).first
    slider.scroll_into_view_if_needed()
    box = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
    readout_before = box.locator(".widget-html").first.inner_text()
    img_before = box.locator("img").first.get_attribute("src")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{lesson}_before.png"), full_page=False)
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    handle.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(200)
    page.wait_for_function(
        "([el, before]) => el.innerText !== before", arg=[box.locator(".widget-html").first.element_handle(),
                                                          readout_before], timeout=30_000)
    page.wait_for_timeout(1500)
    img_after = box.locator("img").first.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / f"{lesson}_after.png"), full_page=False)
    return readout_before, box.locator(".widget-html").first.inner_text(), img_before, img_after


@pytest.mark.parametrize("lesson,label", [("05_wise_ft", "alpha"), ("02_tip_adapter", "beta")])
def test_lesson_runs_in_jupyterlab_and_its_slider_redraws(lab, browser, lesson, label):
    url, token, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _run_all(page, url, token, root, lesson)
        r0, r1, i0, i1 = _slider_changes_figure(page, label, lesson)
        assert r0 != r1, "the readout did not change"
        assert i0 and i1 and i0 != i1, "the figure was not redrawn"
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{lesson}_failure.png"), full_page=True)
        raise
    finally:
        page.close()


def test_chromium_is_debians():
    assert shutil.which("chromium") == CHROMIUM or os.path.exists(CHROMIUM)
