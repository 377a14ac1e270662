"""Fixtures of the hardening tests: a real Prefect server for the CLI subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from hardening_helpers import free_port, kill_group

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A `prefect server` on 127.0.0.1 (own home and SQLite DB) shared by the CLI runs of
    the hardening tests; yields its API URL. Runs started without it would each start a
    temporary server of their own (slow)."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": api, "OMP_NUM_THREADS": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "prefect")
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prefect server did not start: "
                                   + (home / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield api
    finally:
        kill_group(proc, sig=15, timeout=30)
        log.close()


@pytest.fixture(scope="session")
def dask_cluster():
    """A warm external Dask cluster for CLI runs (RESTOREFLOW_DASK_ADDRESS): two
    single-threaded workers with one unit of the GPU resource each, on 127.0.0.1.
    Runs against it skip starting a cluster and importing torch in a fresh worker."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, resources={"GPU": 1},
                      silence_logs=logging.WARNING) as c:
        yield c.scheduler_address
