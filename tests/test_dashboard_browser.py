"""The dashboard in a real browser: `mixforge ui` on a demo run, Debian's headless Chromium driven by
Playwright (by executable path; no browser is downloaded), every page opened, a SQL query run and
downloaded, RegMix fitted on the released runs, and the real `mixture_experiment` flow launched through a
real Prefect server from the form built from its deployment's schema, followed to completion, and its
experiment (proxies trained on Ray, the fit, the best mixture) found in the run. Screenshots go to a
temporary folder (printed).

The deployment's defaults keep the experiment small (proxies of ~70k parameters on 8,000 tokens each): a
launch completed in about 25 s here, most of it starting the flow run's process and a local Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Locator, Page, expect, sync_playwright

from mixtures.io import read_metrics, read_mixtures
from mixtures.proxy import CompactVocab, ProxyConfig
from tests.test_dashboard_pages import DOMAINS, REGMIX_TARGET, SEARCH_SAMPLES, shared_demo_run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token"
WAIT_MS = 60_000
BIN = Path(sys.executable).parent
RUN_MS = 240_000  # a launched experiment: the flow run's process, a local Ray, the proxies
PROXY = {"d_model": 16, "n_layers": 1, "n_heads": 1, "seq_len": 32, "batch_size": 8, "eval_tokens": 1024}
DEPLOYMENT_PARAMETERS = {"by": "domain", "targets": ["science"], "rounds": [8], "budget_tokens": 8_000,
                         "n_samples": 2_000, "top_k": 16, "proxy": PROXY}
SERVE = """
import json
import sys

from prefect.types.entrypoint import EntrypointType

from flows.mixture_experiment import mixture_experiment

mixture_experiment.serve(name="dashboard-test", parameters=json.loads(sys.argv[1]),
                         entrypoint_type=EntrypointType.MODULE_PATH)
"""


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
    on a copy of the demo run (the launched experiment writes into the run; the shared one stays as the page
    tests read it); the dashboard's URL, the run and the Prefect API URL."""
    work = tmp_path_factory.mktemp("browser")
    prefect_api = f"http://127.0.0.1:{free_port()}/api"
    ui_url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "MIXFORGE_UI_TOKEN"}
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_URL=prefect_api)
    run = Path(shutil.copytree(shared_demo_run(tmp_path_factory.getbasetemp(), regmix_data), work / "run"))
    logs = {name: work / f"{name}.log" for name in ("prefect-server", "ui", "serve")}
    processes = []
    try:
        processes.append(start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                prefect_api.split(":")[-1].removesuffix("/api")], logs["prefect-server"], env))
        processes.append(start([str(BIN / "mixforge"), "ui", str(run), "--port", ui_url.split(":")[-1],
                                "--token", TOKEN], logs["ui"], env))
        wait_for(lambda: api(f"{prefect_api}/health") is True, "Prefect server", processes[0], logs["prefect-server"])
        processes.append(start([sys.executable, "-c", SERVE, json.dumps(DEPLOYMENT_PARAMETERS)], logs["serve"], env,
                               cwd=work))
        wait_for(lambda: urllib.request.urlopen(f"{ui_url}/_stcore/health", timeout=2).read() == b"ok",
                 "mixforge ui", processes[1], logs["ui"])
        wait_for(lambda: api(f"{prefect_api}/deployments/filter", {}), "deployment", processes[2], logs["serve"])
        yield {"url": ui_url, "run": run, "prefect_api": prefect_api, "serve_log": logs["serve"]}
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


def choose(select: Locator, option: str) -> None:
    """Pick a select box's option by typing it (it filters the options) and Enter (takes the first left)."""
    select.press_sequentially(option)
    select.press("Enter")
    expect(select).to_have_value(option)


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

    # Launch the real flow through Prefect: the form comes from the deployment's schema, the run dir is filled
    # in, the researcher picks the targets, the number of proxies and the predictor.
    expect(page.get_by_role("combobox", name="Deployment")).to_have_value("mixture_experiment/dashboard-test",
                                                                          timeout=WAIT_MS)
    run = dashboard["run"]
    assert page.get_by_label("run_dir (required)", exact=True).input_value() == str(run)
    assert json.loads(page.get_by_label("proxy (JSON)", exact=True).input_value()) == PROXY
    page.get_by_label("targets (required) (JSON)", exact=True).fill('["science", "law"]')
    page.get_by_label("rounds (JSON)", exact=True).fill("[4]")
    choose(page.get_by_role("combobox", name="model", exact=True), "linear")
    page.get_by_role("button", name="Launch", exact=True).click()
    final = page.get_by_text(re.compile(r"^(Completed|Failed|Crashed|Cancelled)$"))
    expect(final).to_be_visible(timeout=RUN_MS)
    assert final.inner_text() == "Completed", dashboard["serve_log"].read_text()[-3000:]
    page.screenshot(path=shots / "6-launched.png", full_page=True)
    sent = {**DEPLOYMENT_PARAMETERS, "run_dir": str(run), "targets": ["science", "law"], "rounds": [4],
            "method": "regmix", "model": "linear", "seed": 0}
    runs = api(f"{dashboard['prefect_api']}/flow_runs/filter", {})
    assert [(r["parameters"], r["state_type"]) for r in runs] == [(sent, "COMPLETED")]
    assert [a["key"] for a in api(f"{dashboard['prefect_api']}/artifacts/filter", {})] == ["best-mixture"]

    # What the run wrote: one row per proxy trained with the deployment's proxy settings, the fit, the best mixture.
    out = run / "mixtures" / "regmix-science-law"
    ratios, metrics = read_mixtures(out / "ratios.csv"), read_metrics(out / "metrics.csv")
    assert len(ratios) == 4 and list(metrics.index) == list(ratios.index) and set(ratios.columns) == set(DOMAINS)
    assert {"science_val_loss", "law_val_loss"} <= set(metrics.columns)
    assert (metrics["train_tokens"] >= sent["budget_tokens"]).all()
    vocab = CompactVocab.load(out / "vocab.npy")
    assert (metrics["params"] == ProxyConfig(**PROXY).n_params(vocab.size)).all()
    best = yaml.safe_load((out / "best_mixture.yaml").read_text())
    assert best["targets"] == list(best["predicted"]) == ["science_val_loss", "law_val_loss"]
    assert best["runs"] == 4 and best["by"] == "domain" and best["run_dir"] == str(run)
    assert set(best["weights"]) == set(DOMAINS) and sum(best["weights"].values()) == pytest.approx(1)
    report = json.loads((out / "fit" / "report.json").read_text())
    assert report["targets"]["law_val_loss"]["n_runs"] == 4

    # The page, rerun on completion, opens the new experiment.
    experiment = page.get_by_role("combobox", name="Experiment", exact=True)
    choose(experiment, "mixtures/regmix-science-law")
    expect(page.get_by_text(f"4 runs over 8 domains, {len(metrics.columns)} metric(s).", exact=True)).to_be_visible(
        timeout=WAIT_MS)
    page.screenshot(path=shots / "7-experiment.png", full_page=True)
    assert sorted(p.name for p in shots.iterdir()) == ["0-token.png", "1-runs.png", "2-sql.png", "3-clusters.png",
                                                        "4-scores.png", "5-regmix.png", "6-launched.png",
                                                        "7-experiment.png"]
