"""End to end in a real browser: a sweep fills a store, `mlflow server` serves it on loopback, and
headless Chromium (Debian's package, driven by Playwright) finds the parent and its children by
name, opens a child, sees its loss chart and artifacts, and opens the report on the parent.

Screenshots go to $RUNNER_SCREENSHOTS (CI: .ci/screenshots), else the test's temporary folder.
Without Chromium or Playwright the test is skipped, unless RUNNER_REQUIRE_BROWSER=1 (CI sets it).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import all_runs, run_cli

pytestmark = pytest.mark.slow  # a sweep, an mlflow server and Chromium

CHROMIUM = os.environ.get("RUNNER_CHROMIUM", "/usr/bin/chromium")
# Flags this machine needs: no sandbox as root, and no calls home (the network is closed).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SWEEP = ("-m", "problem=poly,puzzle", "optim=adam,lbfgs", "trainer.steps=100")
CHILDREN = ["poly-adam-steps=100", "poly-lbfgs-steps=100", "puzzle-adam-steps=100", "puzzle-lbfgs-steps=100"]
PARENT = "sweep-problem=poly,puzzle-optim=adam,lbfgs-trainer.steps=100"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "playwright is not installed" if sync_playwright is None else (
        None if Path(CHROMIUM).exists() or shutil.which(CHROMIUM) else f"no Chromium at {CHROMIUM}")
    if missing:
        if os.environ.get("RUNNER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here but {missing} (apt-get install chromium; pip install -e '.[test]')")
        pytest.skip(missing)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_sweep(workdir):
    proc = run_cli(workdir, *SWEEP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    port = _free_port()
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", "sqlite:///mlflow.db", "--workers", "1"],
                              cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (workdir / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield workdir, url
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        log.close()


def test_mlflow_ui_shows_the_sweep(served_sweep, tmp_path):
    sync_playwright = _browser_or_skip()
    workdir, url = served_sweep
    shots = Path(os.environ.get("RUNNER_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    runs = {r.info.run_name: r for r in all_runs(workdir)}
    assert set(CHILDREN) | {PARENT} <= set(runs)
    parent, child = runs[PARENT], runs["poly-adam-steps=100"]
    experiment_id = parent.info.experiment_id

    # The report reads the same runs through the tracking server.
    report = run_cli(workdir, "report", f"tracking.uri={url}", "--parent", parent.info.run_id, "--out", str(tmp_path / "rep"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "rep" / "report.html").exists()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(f"{url}/#/experiments/{experiment_id}/runs")
        parent_row = page.locator("[role=row]").filter(has_text=PARENT).first
        parent_row.wait_for()
        _close_side_panel(page)
        _widen_name_column(page)
        parent_row.locator("[col-id*='Run Name'] button").first.click()  # unfold the sweep
        for name in CHILDREN:
            page.get_by_text(name, exact=True).first.wait_for()
        page.screenshot(path=str(shots / "1-sweep-parent-and-children.png"))

        page.get_by_text("poly-adam-steps=100", exact=True).first.click()
        page.wait_for_url(f"**/runs/{child.info.run_id}**")
        page.get_by_text("Parent run").first.wait_for()
        page.get_by_text(PARENT).first.wait_for()  # the child links back to its sweep
        page.screenshot(path=str(shots / "2-child-overview.png"), full_page=True)

        # A chart renders only once scrolled into view, and a run now has more metrics (best_*,
        # sse) than one screen holds: a tall window shows them all, loss among them.
        page.set_viewport_size({"width": 1600, "height": 4000})
        page.get_by_role("tab", name="Model metrics").click()
        loss_chart = page.locator("div").filter(has=page.get_by_text("loss", exact=True)).filter(has=page.locator("canvas, svg.main-svg")).last
        loss_chart.wait_for()
        page.get_by_text("Step", exact=True).first.wait_for()  # the history chart's x axis: a line over steps
        page.screenshot(path=str(shots / "3-child-loss-chart.png"))

        page.get_by_role("tab", name="Artifacts").click()
        for name in ("result.json", "config.yaml", "loss_curve.png", "fit.png"):
            page.get_by_text(name, exact=True).first.wait_for()
        page.get_by_text("loss_curve.png", exact=True).first.click()
        page.locator("img[src*='loss_curve.png'], img[src^='blob:'], img[src^='data:']").first.wait_for()
        page.screenshot(path=str(shots / "4-child-artifacts.png"))

        page.goto(f"{url}/#/experiments/{experiment_id}/runs/{parent.info.run_id}")
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("report", exact=True).first.click()
        page.get_by_text("report.html", exact=True).first.click()
        frame = page.frame_locator("iframe").first
        frame.get_by_text("Optimiser comparison").first.wait_for()
        frame.get_by_text("Performance and data profiles").first.wait_for()
        page.screenshot(path=str(shots / "5-parent-report.png"))
        browser.close()

    taken = sorted(shots.glob("*.png"))
    assert len(taken) >= 5 and all(p.stat().st_size > 20_000 for p in taken), [(p.name, p.stat().st_size) for p in taken]


def _close_side_panel(page) -> None:
    """MLflow 3 opens an assistant panel beside the runs; it only narrows the screenshot."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def _widen_name_column(page) -> None:
    """Run names are long by design (poly-adam-lr=0.1-seed=3): drag the column wider so that the
    screenshot shows them whole."""
    handle = page.locator(".ag-header-cell[col-id*='Run Name'] .ag-header-cell-resize").first
    if not handle.count():
        return
    box = handle.bounding_box()
    if box:
        page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + 320, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
