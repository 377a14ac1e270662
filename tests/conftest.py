"""Shared fixtures. Storage: a real SeaweedFS S3 server (session) and a parametrised
``store`` fixture giving a fresh TileStore on a local directory and on S3."""

from __future__ import annotations

import os
import re
import uuid

import pytest

# Prefect's ephemeral API server gets 20 s to start by default; the suite runs beside
# other jobs on 2 cores, where a start took longer (the CLI sets the same default)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

TEST_ACCESS_KEY = "restoreflow-test"
TEST_SECRET_KEY = "restoreflow-test-secret-4c1d2e"
TEST_TILE = 64  # small tiles: small test images still span many chunks


def _plain_settings(**overrides):
    """Settings independent of the caller's AWS/RESTOREFLOW environment."""
    from restoreflow.settings import Settings

    base = {
        "s3_endpoint_url": None,
        "s3_region": None,
        "aws_profile": None,
        "aws_access_key_id": None,
        "aws_secret_access_key": None,
        "aws_session_token": None,
        "tile_size": TEST_TILE,
        "max_pixels": 400_000_000,
        "min_side": 8,
    }
    base.update(overrides)
    return Settings().model_copy(update=base)


@pytest.fixture
def local_settings():
    """Settings with no S3 endpoint or credentials and tile size 64."""
    return _plain_settings()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 (test credentials), for the session."""
    from restoreflow.storage.s3server import seaweedfs_server, weed_binary

    try:
        weed_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with seaweedfs_server(
        tmp_path_factory.mktemp("seaweedfs"), TEST_ACCESS_KEY, TEST_SECRET_KEY,
        bucket="restoreflow-test",
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def s3_settings(s3_server):
    """Settings pointing at the session's S3 server (tile size 64)."""
    from pydantic import SecretStr

    return _plain_settings(
        s3_endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=SecretStr(s3_server.access_key),
        aws_secret_access_key=SecretStr(s3_server.secret_key),
    )


@pytest.fixture
def make_store(request, tmp_path):
    """``make_store(kind, name=None, tile_size=64)``: a new TileStore, "local" or "s3"."""
    from restoreflow.storage.store import TileStore

    def make(kind: str = "local", name: str | None = None, tile_size: int = TEST_TILE):
        name = name or f"store-{uuid.uuid4().hex[:8]}"
        if kind == "local":
            return TileStore(tmp_path / name, _plain_settings(), tile_size=tile_size)
        if kind == "s3":
            settings = request.getfixturevalue("s3_settings")
            bucket = request.getfixturevalue("s3_server").bucket
            test = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40]
            return TileStore(f"s3://{bucket}/{test}-{name}", settings, tile_size=tile_size)
        raise ValueError(kind)

    return make


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, make_store):
    """A fresh, empty TileStore: once on a local directory, once on the S3 server."""
    return make_store(request.param)


@pytest.fixture
def store_kind(store):
    return "s3" if store.is_s3 else "local"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """Prefect test harness: a real (ephemeral, SQLite) Prefect API for the flow tests."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
