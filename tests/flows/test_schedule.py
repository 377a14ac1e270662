"""A cron deployment served by `restoreflow serve` against a real `prefect server`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import save_tiny_prior


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path, seed):
    rng = np.random.default_rng(seed)
    img = (np.kron(rng.random((8, 8, 3)), np.ones((4, 4, 1))) * 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def _wait(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        out = pred()
        if out:
            return out
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _run_and_wait(api, dep_id):
    def create():
        # a busy server (SQLite) may answer 5xx for a moment: ask again, say what it said
        r = httpx.post(f"{api}/deployments/{dep_id}/create_flow_run", json={}, timeout=30)
        if r.status_code >= 500:
            return None
        assert r.status_code < 300, r.text
        return r.json()

    run = _wait(create, 60, "the flow run to be created")

    def finished():
        st = httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]["type"]
        return st if st in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return _wait(finished, 240, "the flow run")


@pytest.mark.slow
def test_served_cron_deployment_processes_only_new_images(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "ph"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RESTOREFLOW_DASK_WORKERS": "1",
           "RESTOREFLOW_TILE_SIZE": "16", "OMP_NUM_THREADS": "1"}
    bindir = os.path.dirname(sys.executable)
    server = subprocess.Popen([f"{bindir}/prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    serve = None
    try:
        _wait(lambda: _ok(f"{api}/health"), 90, "prefect server")
        src = tmp_path / "incoming"
        src.mkdir()
        for i in range(2):
            _png(src / f"a{i}.png", i)
        store = tmp_path / "store"
        spec = {"name": "nightly", "sources": [str(src)], "store": str(store),
                "degradation": "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)",
                "prior": save_tiny_prior(tmp_path / "prior"),
                "restore": {"steps": 2, "tile": 32, "overlap": 8}, "report": None}
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        serve = subprocess.Popen([f"{bindir}/restoreflow", "serve", str(tmp_path / "spec.yaml"),
                                  "--cron", "0 3 * * *"], env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        deps = _wait(lambda: httpx.post(f"{api}/deployments/filter", json={}).json(), 90,
                     "the deployment")
        dep = deps[0]
        scheds = httpx.get(f"{api}/deployments/{dep['id']}/schedules").json()
        assert [s["schedule"]["cron"] for s in scheds] == ["0 3 * * *"]
        assert _run_and_wait(api, dep["id"]) == "COMPLETED"
        _png(src / "new.png", 7)  # the archive gained a file overnight
        assert _run_and_wait(api, dep["id"]) == "COMPLETED"
        runs = json.loads((store / "tables" / "runs.json").read_text())
        assert [r["counts"]["restored"] for r in runs] == [2, 1]
        assert [r["counts"]["skipped"] for r in runs] == [0, 2]
    finally:
        for p in (serve, server):
            if p is not None:
                os.killpg(p.pid, 15)
                p.wait(30)


def _ok(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
