"""Session-wide fixtures: one local Ray, an isolated Prefect home, and the sample corpus."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = Path(os.environ.get("MIXFORGE_SAMPLE_CORPUS", REPO / "data" / "sample"))
REGMIX_DATA = REPO.parent / "shared" / "data" / "regmix"
MIXINGLAWS_DATA = REPO.parent / "shared" / "data" / "mixinglaws"


def pytest_configure(config: pytest.Config) -> None:
    home = Path(os.environ.get("PYTEST_PREFECT_HOME", "/tmp/mixforge-test-prefect"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    # not the Ray head and Prefect server of a developer's `mixforge up` (a test that wants them starts its own)
    os.environ["MIXFORGE_SERVICES"] = str(home / "no-services.json")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # A local S3-compatible server (moto) for object-storage tests. Its endpoint is fixed before any
    # Ray worker starts, so workers inherit it the way a real cluster's nodes get their settings.
    os.environ.setdefault("MIXFORGE_TEST_S3_PORT", str(_free_port()))
    os.environ.setdefault("AWS_ENDPOINT_URL", f"http://127.0.0.1:{os.environ['MIXFORGE_TEST_S3_PORT']}")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server on loopback (a real HTTP server speaking the S3 protocol), at
    AWS_ENDPOINT_URL; tests that inject faults wrap its WSGI app (`server._server.app`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(os.environ["MIXFORGE_TEST_S3_PORT"]),
                                verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole test session (ray.init costs 5-10 s)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=1_000_000_000)
    yield ray


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    """The sample corpus that `make sample` builds (tests run after it)."""
    if not (SAMPLE_CORPUS / "MANIFEST.json").exists():
        raise RuntimeError(f"sample corpus missing at {SAMPLE_CORPUS}: run `make sample` first")
    return SAMPLE_CORPUS


@pytest.fixture(scope="session")
def regmix_data() -> Path:
    if not REGMIX_DATA.exists():
        raise RuntimeError(f"RegMix data missing at {REGMIX_DATA} (expected ../shared/data/regmix)")
    return REGMIX_DATA


@pytest.fixture(scope="session")
def mixinglaws_data() -> Path:
    if not MIXINGLAWS_DATA.exists():
        raise RuntimeError(f"Data Mixing Laws data missing at {MIXINGLAWS_DATA} (expected ../shared/data/mixinglaws)")
    return MIXINGLAWS_DATA
