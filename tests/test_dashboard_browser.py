"""The dashboard in a real browser: `mixforge ui` on a demo run, Debian's headless Chromium driven by
Playwright (by executable path; no browser is downloaded), every page opened, a SQL query run and
downloaded, RegMix fitted on the released runs, and a `mixture_experiment` run launched through a real
Prefect server and followed to completion. Screenshots go to a temporary folder (printed).

The served flow is a stand-in with the real flow's name and a typical signature: what is tested is the
dashboard's side (the form built from the deployment's schema, the launch, the state it follows).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_dashboard_pages import REGMIX_TARGET, SEARCH_SAMPLES, shared_demo_run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token"
WAIT_MS = 60_000
BIN = Path(sys.executable).parent
STAND_IN_FLOW = '''
from prefect import flow


@flow(name="mixture_experiment")
def mixture_experiment(run_dir: str, n_mixtures: int = 16, targets: list[str] | None = None, seed: int = 0) -> int:
    return n_mixtures


if __name__ == "__main__":
    mixture_experiment.serve(name="dashboard-test")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """A server process in its own process group, so stopping it also stops what it spawned."""
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def api(url: str, body: dict | None = None) -> object:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_for(check, what: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not ready within {seconds} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, regmix_data):
    """A Prefect server serving a `mixture_experiment` deployment, and `mixforge ui` (with an access token)
    on the demo run; the dashboard's URL, the run and the Prefect API URL."""
    work = tmp_path_factory.mktemp("browser")
    prefect_api = f"http://127.0.0.1:{free_port()}/api"
    ui_url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "MIXFORGE_UI_TOKEN"}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_URL=prefect_api)
    run = shared_demo_run(tmp_path_factory.getbasetemp(), regmix_data)
    logs = {name: work / f"{name}.log" for name in ("prefect-server", "ui", "serve")}
    processes = []
    try:
        processes.append(start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                prefect_api.split(":")[-1].removesuffix("/api")], logs["prefect-server"], env))
        processes.append(start([str(BIN / "mixforge"), "ui", str(run), "--port", ui_url.split(":")[-1],
                                "--token", TOKEN], logs["ui"], env))
        wait_for(lambda: api(f"{prefect_api}/health") is True, "Prefect server", processes[0], logs["prefect-server"])
        (work / "stand_in_flow.py").write_text(STAND_IN_FLOW)
        processes.append(start([sys.executable, "stand_in_flow.py"], logs["serve"], env, cwd=work))
        wait_for(lambda: urllib.request.urlopen(f"{ui_url}/_stcore/health", timeout=2).read() == b"ok",
                 "mixforge ui", processes[1], logs["ui"])
        wait_for(lambda: api(f"{prefect_api}/deployments/filter", {}), "deployment", processes[2], logs["serve"])
        yield {"url": ui_url, "run": run, "prefect_api": prefect_api}
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture(scope="module")
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
        yield context.new_page()
        browser.close()


def settled(page: Page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(300)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=WAIT_MS)


def open_page(page: Page, title: str, ready: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_text(ready, exact=True).first).to_be_visible(timeout=WAIT_MS)
    settled(page)


def test_dashboard_in_chromium(dashboard, page, tmp_path_factory):
    shots = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {shots}")

    page.goto(dashboard["url"])
    expect(page.get_by_label("Access token", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Funnel")).to_have_count(0)
    page.screenshot(path=shots / "0-token.png")

    page.goto(f"{dashboard['url']}/?token={TOKEN}")
    expect(page.get_by_text("Funnel", exact=True)).to_be_visible(timeout=WAIT_MS)
    settled(page)
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    assert "token=" not in page.url
    body = page.locator("body").inner_text()
    assert "634 dropped (634 too_short)" in body and "1 quarantined" in body
    page.screenshot(path=shots / "1-runs.png", full_page=True)

    open_page(page, "SQL", "SQL")
    query = page.get_by_label("Query", exact=True)
    query.fill("COPY (SELECT * FROM docs) TO 'out.csv'")
    page.get_by_role("button", name="Run query").click()
    expect(page.get_by_text("refused a COPY statement")).to_be_visible(timeout=WAIT_MS)
    query.fill("SELECT domain, count(*) AS docs, sum(n_tokens) AS tokens FROM docs GROUP BY 1 ORDER BY 1")
    page.get_by_role("button", name="Run query").click()
    expect(page.get_by_text("8 row(s)")).to_be_visible(timeout=WAIT_MS)
    settled(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == '"domain","docs","tokens"' and len(lines) == 9 and lines[1].startswith('"computers",')
    page.screenshot(path=shots / "2-sql.png", full_page=True)

    open_page(page, "Clusters", "Cluster table (8 clusters)")
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    page.screenshot(path=shots / "3-clusters.png", full_page=True)

    open_page(page, "Scores", "Threshold preview")
    expect(page.get_by_text("Documents kept")).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    page.screenshot(path=shots / "4-scores.png", full_page=True)

    open_page(page, "RegMix", "RegMix")
    expect(page.get_by_text(REGMIX_TARGET).first).to_be_visible()
    page.get_by_label("Candidate mixtures", exact=True).fill(str(SEARCH_SAMPLES))
    page.get_by_role("button", name="Fit", exact=True).click()
    spearman = page.get_by_test_id("stMetric").filter(has_text="Spearman")
    expect(spearman).to_be_visible(timeout=WAIT_MS * 2)
    settled(page)
    assert float(spearman.get_by_test_id("stMetricValue").inner_text()) >= 0.9
    expect(page.get_by_text("Best mixture", exact=True)).to_be_visible()
    page.screenshot(path=shots / "5-regmix.png", full_page=True)

    # Launch through Prefect: the form comes from the deployment's schema, the run dir is filled in.
    expect(page.get_by_role("combobox", name="Deployment")).to_have_value("mixture_experiment/dashboard-test",
                                                                          timeout=WAIT_MS)
    assert page.get_by_label("run_dir (required)", exact=True).input_value() == str(dashboard["run"])
    page.get_by_label("n_mixtures", exact=True).fill("5")
    page.get_by_role("button", name="Launch", exact=True).click()
    expect(page.get_by_text("Completed", exact=True)).to_be_visible(timeout=WAIT_MS * 2)
    page.screenshot(path=shots / "6-launched.png", full_page=True)
    runs = api(f"{dashboard['prefect_api']}/flow_runs/filter", {})
    assert [(r["parameters"], r["state_type"]) for r in runs] == [
        ({"run_dir": str(dashboard["run"]), "n_mixtures": 5, "seed": 0}, "COMPLETED")]
    assert sorted(p.name for p in shots.iterdir()) == ["0-token.png", "1-runs.png", "2-sql.png", "3-clusters.png",
                                                        "4-scores.png", "5-regmix.png", "6-launched.png"]
