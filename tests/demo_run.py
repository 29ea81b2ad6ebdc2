"""The run `make demo` makes, made once per test session by the very command the Makefile's demo target runs
(`mixforge run configs/pipeline.yaml`, from the repository root), for test_pipeline.py and
test_dashboard_browser.py. The command is read from the Makefile, so the tests cannot drift from the demo.

It costs ~3 minutes on a quiet 2-core box (curation ~1 min, CLIMB, the scorers, the eight RegMix proxies).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT_S = 1200


def demo_command(out: Path) -> list[str]:
    """The demo target's `mixforge run` line of the Makefile, with $(BIN) and $(DEMO) filled in."""
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)
    line = next(line.strip() for line in recipe.splitlines() if "mixforge run" in line)
    words = shlex.split(line.replace("$(BIN)", str(BIN)).replace("$(DEMO)", str(out)))
    assert words[:2] == [str(BIN / "mixforge"), "run"], line
    return words


def demo_run(basetemp: Path) -> Path:
    """The demo run under this session's temporary folder, made on first use; seconds it took are in
    `<out>.seconds`."""
    out = basetemp / "demo-run"
    seconds = out.with_suffix(".seconds")
    if seconds.exists():
        return out
    # make demo's environment: the Makefile gives the run's temporary Prefect server 120 s to start
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ, "TQDM_DISABLE": "1"}
    env.pop("RAY_ADDRESS", None)
    log = out.with_suffix(".log")
    start = time.monotonic()
    with log.open("wb") as output:
        finished = subprocess.run(demo_command(out), cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=TIMEOUT_S)
    if finished.returncode != 0:
        raise RuntimeError(f"the demo run failed ({finished.returncode}): {log.read_text()[-3000:]}")
    seconds.write_text(f"{time.monotonic() - start:.1f}")
    return out
