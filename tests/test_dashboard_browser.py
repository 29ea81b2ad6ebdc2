"""The dashboard in a real browser on the run `make demo` makes (tests/demo_run.py runs the Makefile's own
command): `mixforge ui` with no Prefect server configured, so it starts its own on 127.0.0.1 and serves
`mixture_experiment`; Debian's headless Chromium driven by Playwright (by executable path; no browser is
downloaded). Every page opened and checked for its content (the funnel and the best mixture, a SQL query run
and downloaded, the cluster table, the quality scores and the scorers trained from the run, the run's RegMix
experiment fitted), an experiment launched from the RegMix page's form (built from the served deployment's
schema, prefilled with the run's own experiment settings) and followed to completion, its experiment found in
the run, and the local Prefect server gone once the dashboard stops. Screenshots go to a temporary folder
(printed).

The launch trains four proxies of ~20k parameters on 8,000 tokens each: about a minute here, most of it starting
the flow run's process and a local Ray.
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
from demo_run import demo_run
from playwright.sync_api import Locator, Page, expect, sync_playwright

from mixforge.services import api_healthy
from mixtures.config import ExperimentConfig
from mixtures.io import read_metrics, read_mixtures
from mixtures.proxy import CompactVocab, ProxyConfig
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest
from tests.prefect_server import prefect_server_fixture  # noqa: F401 - the `prefect_server` fixture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token"
WAIT_MS = 60_000
BIN = Path(sys.executable).parent
UI_START_S = 300  # `mixforge ui` waits for its Prefect server (first start: a new database) and the deployment
RUN_MS = 300_000  # a launched experiment: the flow run's process, a local Ray, the proxies
PROXY = {"d_model": 16, "n_layers": 1, "n_heads": 1, "seq_len": 32, "batch_size": 8, "eval_tokens": 1024}
ROUNDS, BUDGET_TOKENS = [4], 8_000  # the launched experiment: 4 proxies of 8,000 tokens


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
            process.wait(60)
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
def dashboard(tmp_path_factory):
    """`mixforge ui` (with an access token, without PREFECT_API_URL) on a copy of the demo run (the launched
    experiment writes into the run; the shared one stays as test_pipeline.py reads it): the dashboard's URL,
    the run, the API of the Prefect server it started, its process and log."""
    work = tmp_path_factory.mktemp("browser")
    prefect_api = f"http://127.0.0.1:{free_port()}/api"
    ui_url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("MIXFORGE_UI_TOKEN", "PREFECT_API_URL", "RAY_ADDRESS")}
    # the runner looks for launched runs every 2 s (default 10 s)
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_RUNNER_POLL_FREQUENCY="2")
    run = Path(shutil.copytree(demo_run(tmp_path_factory.getbasetemp()), work / "run"))
    log = work / "ui.log"
    ui = start([str(BIN / "mixforge"), "ui", str(run), "--port", ui_url.split(":")[-1], "--prefect-port",
                prefect_api.split(":")[-1].removesuffix("/api"), "--token", TOKEN], log, env)
    try:
        wait_for(lambda: urllib.request.urlopen(f"{ui_url}/_stcore/health", timeout=2).read() == b"ok",
                 "mixforge ui", ui, log, seconds=UI_START_S)
        yield {"url": ui_url, "run": run, "prefect_api": prefect_api, "process": ui, "log": log}
    finally:
        stop(ui)


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


def rows(run: Path, sql: str) -> list[dict]:
    return query(open_catalog(run), sql).to_pylist()


def test_dashboard_on_the_demo_run_in_chromium(dashboard, page, tmp_path_factory):
    shots = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {shots}")
    run = dashboard["run"]
    manifest = load_manifest(run)

    page.goto(dashboard["url"])
    expect(page.get_by_label("Access token", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Funnel")).to_have_count(0)
    page.screenshot(path=shots / "0-token.png")

    # Runs: the funnel through every stage, tokens by group, the best mixture the pipeline found
    page.goto(f"{dashboard['url']}/?token={TOKEN}")
    expect(page.get_by_text("Funnel", exact=True)).to_be_visible(timeout=WAIT_MS)
    settled(page)
    assert "token=" not in page.url
    expect(page.get_by_text("Best mixture", exact=True)).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(3, timeout=WAIT_MS)
    body = page.locator("body").inner_text()
    selected = manifest.stages["select"].counts
    assert f"{selected['docs_in']:,} documents in, {selected['docs_out']:,} kept" in body
    assert f"{manifest.stages['ingest'].counts['docs_in']:,} documents in" in body and "not_selected" in body
    page.screenshot(path=shots / "1-runs.png", full_page=True)

    # SQL: writes refused; the super-clusters of the selected documents, downloaded
    open_page(page, "SQL", "SQL")
    query_box = page.get_by_label("Query", exact=True)
    query_box.fill("COPY (SELECT * FROM docs) TO 'out.csv'")
    page.get_by_role("button", name="Run query").click()
    expect(page.get_by_text("refused a COPY statement")).to_be_visible(timeout=WAIT_MS)
    sql = "SELECT super_cluster, count(*) AS docs, sum(n_tokens) AS tokens FROM docs GROUP BY 1 ORDER BY 1"
    expected = rows(run, sql)
    query_box.fill(sql)
    page.get_by_role("button", name="Run query").click()
    expect(page.get_by_text(f"{len(expected)} row(s)")).to_be_visible(timeout=WAIT_MS)
    settled(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == '"super_cluster","docs","tokens"' and len(lines) == len(expected) + 1
    assert lines[1] == ",".join(str(expected[0][k]) for k in ("super_cluster", "docs", "tokens"))
    page.screenshot(path=shots / "2-sql.png", full_page=True)

    # Clusters: CLIMB's map and cluster table
    n_clusters = rows(run, "SELECT count(*) AS n FROM clusters")[0]["n"]
    open_page(page, "Clusters", f"Cluster table ({n_clusters} clusters)")
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    page.screenshot(path=shots / "3-clusters.png", full_page=True)

    # Scores: the quality scores the run's own scorers wrote, and those scorers
    open_page(page, "Scores", "Threshold preview")
    score = page.get_by_role("combobox", name="Score", exact=True)
    choose(score, "dclm_score")
    settled(page)
    expect(page.get_by_text("Documents kept")).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    expect(page.get_by_text("Scorers trained from this run", exact=True)).to_be_visible()
    body = page.locator("body").inner_text()
    assert all(name in body for name in ("DCLM-style fastText", "PreSelect", "DataMan students"))
    kept = rows(run, "SELECT count(*) AS n FROM docs")[0]["n"]
    assert f"of {kept:,}" in page.get_by_test_id("stMetric").filter(has_text="Documents kept").inner_text()
    choose(score, "preselect")
    settled(page)
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=WAIT_MS)
    page.screenshot(path=shots / "4-scores.png", full_page=True)

    # RegMix: the run's own experiment over its super-clusters, fitted
    target = manifest.config["mixture"]["targets"][0]
    experiment = f"mixtures/regmix-{target}"
    supers = sorted({str(r["super_cluster"]) for r in rows(run, "SELECT DISTINCT super_cluster FROM docs")})
    open_page(page, "RegMix", "RegMix")
    expect(page.get_by_role("combobox", name="Experiment", exact=True)).to_have_value(experiment, timeout=WAIT_MS)
    expect(page.get_by_text(f"8 runs over {len(supers)} domains, ", exact=False)).to_be_visible()
    choose(page.get_by_role("combobox", name="Model", exact=True), "linear")
    page.get_by_role("button", name="Fit", exact=True).click()
    spearman = page.get_by_test_id("stMetric").filter(has_text="Spearman")
    expect(spearman).to_be_visible(timeout=WAIT_MS * 2)
    settled(page)
    assert -1 <= float(spearman.get_by_test_id("stMetricValue").inner_text()) <= 1
    expect(page.get_by_text("Best mixture", exact=True)).to_be_visible()
    page.screenshot(path=shots / "5-regmix.png", full_page=True)

    # Launch through the Prefect server `mixforge ui` started: the form comes from the served deployment, with
    # the run and its own experiment's settings filled in; another super-cluster as the target, fewer and
    # smaller proxies.
    expect(page.get_by_role("combobox", name="Deployment")).to_have_value("mixture_experiment/ui-run",
                                                                          timeout=WAIT_MS)
    assert page.get_by_label("corpus.run_dir (required)", exact=True).input_value() == str(run)
    assert json.loads(page.get_by_label("targets (required) (JSON)", exact=True).input_value()) == [target]
    assert page.get_by_label("corpus.by (required)", exact=True).input_value() == "super_cluster"
    other = max((r for r in rows(run, "SELECT CAST(super_cluster AS VARCHAR) AS s, sum(n_tokens) AS t FROM docs "
                                      "GROUP BY 1") if r["s"] != target), key=lambda r: r["t"])["s"]
    page.get_by_label("targets (required) (JSON)", exact=True).fill(json.dumps([other]))
    page.get_by_label("rounds (JSON)", exact=True).fill(json.dumps(ROUNDS))
    page.get_by_label("materialize.budget_tokens", exact=True).fill(str(BUDGET_TOKENS))
    for name, value in PROXY.items():
        page.get_by_label(f"proxy.{name}", exact=True).fill(str(value))
    choose(page.get_by_role("combobox", name="regression.model", exact=True), "linear")
    page.get_by_role("button", name="Launch", exact=True).click()
    final = page.get_by_text(re.compile(r"^(Completed|Failed|Crashed|Cancelled)$"))
    expect(final).to_be_visible(timeout=RUN_MS)
    assert final.inner_text() == "Completed", dashboard["log"].read_text()[-3000:]
    page.screenshot(path=shots / "6-launched.png", full_page=True)
    runs = api(f"{dashboard['prefect_api']}/flow_runs/filter", {})
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    launched = ExperimentConfig.model_validate(runs[0]["parameters"]["config"])
    assert (launched.targets, launched.corpus.run_dir, launched.rounds, launched.materialize.budget_tokens,
            launched.regression.model, launched.proxy.model_dump(include=set(PROXY))) == (
        [other], run, ROUNDS, BUDGET_TOKENS, "linear", PROXY)

    # What the run wrote: one row per proxy trained with the launched settings, the fit, the best mixture
    out = run / "mixtures" / f"regmix-{other}"
    ratios, metrics = read_mixtures(out / "ratios.csv"), read_metrics(out / "metrics.csv")
    assert len(ratios) == 4 and list(metrics.index) == list(ratios.index) and sorted(ratios.columns) == supers
    assert (metrics["train_tokens"] >= BUDGET_TOKENS).all()
    assert (metrics["params"] == ProxyConfig(**PROXY).n_params(CompactVocab.load(out / "vocab.npy").size)).all()
    best = yaml.safe_load((out / "best_mixture.yaml").read_text())
    assert best["targets"] == [f"{other}_val_loss"] and best["runs"] == 4 and best["by"] == "super_cluster"
    assert sorted(best["weights"]) == supers and sum(best["weights"].values()) == pytest.approx(1)

    # The page, rerun on completion, opens the new experiment.
    choose(page.get_by_role("combobox", name="Experiment", exact=True), f"mixtures/regmix-{other}")
    expect(page.get_by_text(f"4 runs over {len(supers)} domains, {len(metrics.columns)} metric(s).",
                            exact=True)).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=shots / "7-experiment.png", full_page=True)

    # Every page of the app (those above and any other) renders a title and content, and no exception.
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    titles = [links.nth(i).inner_text().strip().splitlines()[-1] for i in range(links.count())]  # after its icon
    assert {"Runs", "SQL", "Clusters", "Scores", "RegMix"} <= set(titles), titles
    for title in titles:
        links.filter(has_text=title).first.click()
        settled(page)
        expect(page.locator("h1").first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        shown = page.get_by_test_id("stMain").get_by_test_id("stElementContainer")
        expect(shown.nth(2)).to_be_attached(timeout=WAIT_MS)  # title, caption, content (a busy page renders late)
        page.screenshot(path=shots / f"8-{title.lower()}.png", full_page=True)
    assert len(list(shots.iterdir())) == 8 + len(titles)

    # The Prefect server lives as long as the dashboard.
    assert api_healthy(dashboard["prefect_api"])
    stop(dashboard["process"])
    assert not api_healthy(dashboard["prefect_api"]), dashboard["log"].read_text()[-2000:]


def test_with_prefect_api_url_the_dashboard_uses_that_server(tmp_path, page):
    """PREFECT_API_URL set: `mixforge ui` starts no server of its own, and the RegMix page asks that one."""
    configured, local = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "MIXFORGE_UI_TOKEN"}
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{configured}/api"
    ui_url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "run").mkdir()
    log = tmp_path / "ui.log"
    ui = start([str(BIN / "mixforge"), "ui", str(tmp_path / "run"), "--port", ui_url.split(":")[-1],
                "--prefect-port", str(local)], log, env)
    try:
        wait_for(lambda: urllib.request.urlopen(f"{ui_url}/_stcore/health", timeout=2).read() == b"ok",
                 "mixforge ui", ui, log)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", local)) != 0  # nothing listens where a local server would
        assert "Prefect:" not in log.read_text()
        page.goto(ui_url)
        expect(page.get_by_text("Funnel", exact=True).or_(page.get_by_text("No manifest.json", exact=False))
               ).to_be_visible(timeout=WAIT_MS)
        open_page(page, "RegMix", "RegMix")
        expect(page.get_by_text(f"The Prefect server at {env['PREFECT_API_URL']}", exact=False)).to_be_visible(
            timeout=WAIT_MS)
    finally:
        stop(ui)


@pytest.mark.parametrize("named_by", ["--prefect-port", "mixforge up"])
def test_a_prefect_server_already_on_the_port_is_reused_and_outlives_the_dashboard(prefect_server, tmp_path,
                                                                                   named_by):
    """No PREFECT_API_URL, but a Prefect server answers on --prefect-port, or `mixforge up` recorded one:
    `mixforge ui` serves the flow there and leaves the server running when it stops."""
    api_url, server_env = prefect_server
    env = {k: v for k, v in server_env.items() if k not in ("MIXFORGE_UI_TOKEN", "PREFECT_API_URL")}
    ui_url = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "run").mkdir()
    log = tmp_path / "ui.log"
    command = [str(BIN / "mixforge"), "ui", str(tmp_path / "run"), "--port", ui_url.split(":")[-1]]
    if named_by == "--prefect-port":
        command += ["--prefect-port", api_url.split(":")[-1].removesuffix("/api")]
    else:  # a server `mixforge up` found running (pid null: not its own), on another port than the default
        env["MIXFORGE_SERVICES"] = str(tmp_path / "services.json")
        (tmp_path / "services.json").write_text(json.dumps({"prefect": {"address": api_url, "pid": None}}))
    ui = start(command, log, env)
    try:
        wait_for(lambda: urllib.request.urlopen(f"{ui_url}/_stcore/health", timeout=2).read() == b"ok",
                 "mixforge ui", ui, log, seconds=UI_START_S)
        assert f"Prefect: reusing the server at {api_url}" in log.read_text()
        served = api(f"{api_url}/deployments/filter", {})
        assert [(d["name"], d["paused"]) for d in served] == [("ui-run", False)]
    finally:
        stop(ui)
    assert api_healthy(api_url)
    assert [d["paused"] for d in api(f"{api_url}/deployments/filter", {})] == [True]  # no longer served
