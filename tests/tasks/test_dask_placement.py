"""Model tasks land on resource-bearing Dask workers; CPU tasks do not wait for them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from restoreflow.settings import Settings
from restoreflow.tasks.runner import dask_task_runner, model_placement


@task(cache_policy=NO_CACHE)
def model_work(i: int) -> tuple[str, float, float]:
    from distributed import get_worker

    t0 = time.time()
    time.sleep(1.0)
    return get_worker().name, t0, time.time()


@task(cache_policy=NO_CACHE)
def cpu_work(i: int) -> tuple[str, float, float]:
    from distributed import get_worker

    t0 = time.time()
    time.sleep(0.1)
    return get_worker().name, t0, time.time()


def _worker(addr: str, name: str, *extra: str) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return subprocess.Popen(
        [exe, "worker", addr, "--name", name, "--nthreads", "1", "--no-dashboard",
         "--host", "127.0.0.1", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_model_tasks_land_on_gpu_worker(prefect_api):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=0, dashboard_address=None, host="127.0.0.1")
    addr = cluster.scheduler_address
    procs = [_worker(addr, "gpu-worker", "--resources", "GPU=1"), _worker(addr, "cpu-worker")]
    try:
        with Client(addr) as c:
            c.wait_for_workers(2, timeout=60)
        settings = Settings(dask_address=addr)

        @flow(task_runner=dask_task_runner(settings))
        def placement_flow():
            with model_placement(settings):
                models = [model_work.submit(i) for i in range(3)]
            cpus = [cpu_work.submit(i) for i in range(6)]
            return [f.result() for f in models], [f.result() for f in cpus]

        models, cpus = placement_flow()
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        cluster.close()
    assert {m[0] for m in models} == {"gpu-worker"}
    # model tasks never overlap on the one GPU
    spans = sorted((m[1], m[2]) for m in models)
    assert all(a[1] <= b[0] + 0.05 for a, b in zip(spans, spans[1:], strict=False))
    # CPU tasks ran elsewhere meanwhile: all finished before the model tasks did
    assert max(c[2] for c in cpus) < max(m[2] for m in models)
    assert any(c[0] == "cpu-worker" for c in cpus)


EPHEMERAL = """
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from restoreflow.settings import Settings
from restoreflow.tasks.runner import dask_task_runner

@task(cache_policy=NO_CACHE)
def where():
    from prefect.settings import PREFECT_API_URL
    return PREFECT_API_URL.value()

@flow(task_runner=dask_task_runner(Settings(), n_workers=1))
def f():
    from prefect.client.orchestration import get_client
    return where.submit().result(), str(get_client().api_url)

print(*f())
"""


@pytest.mark.slow
def test_embedded_workers_report_to_the_drivers_ephemeral_api(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_EPHEMERAL_ENABLED="true",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    r = subprocess.run([sys.executable, "-c", EPHEMERAL], env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    worker_url, driver_url = r.stdout.split()[-2:]
    assert worker_url.startswith("http://127.0.0.1:")
    assert driver_url.rstrip("/") == worker_url.rstrip("/")
