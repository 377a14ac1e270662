"""Worker death: a Dask worker is SIGKILLed while it runs a restore task; the task runs
again on the other worker and the restore flow completes with every image restored,
bit-identical to restoring each image in one process.

Dask reschedules the lost task (the same Prefect task run id) on the surviving worker,
and Prefect's task engine accepts running it again: no resubmission by the flow is
needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hardening_helpers import DEGRADATION, group_members, write_pngs

from helpers import save_tiny_prior

N_IMAGES = 4
STEPS = 6


def _worker(addr: str, name: str, log) -> subprocess.Popen:
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return subprocess.Popen(
        [exe, "worker", addr, "--name", name, "--nthreads", "1", "--no-dashboard",
         "--host", "127.0.0.1", "--resources", "GPU=1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RESTOREFLOW_TILE_SIZE": "16"},
    )


def _prepare_store(tmp_path):
    from restoreflow.degradation import DegradationSpec
    from restoreflow.settings import get_settings
    from restoreflow.stages.simulate import simulate_image
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    write_pngs(tmp_path / "src", N_IMAGES, seed=11)
    store = TileStore(tmp_path / "store", get_settings(), tile_size=16)
    rep = ingest([str(tmp_path / "src")], store, progress=False)
    ids = [r.image_id for r in rep.rows]
    spec = DegradationSpec.parse(DEGRADATION)
    for i in ids:
        simulate_image(store, i, spec)
    return store, ids


@pytest.mark.slow
def test_killed_worker_task_is_rerun_elsewhere(tmp_path, prefect_server, monkeypatch):
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    from restoreflow.flows.restore import restore_flow
    from restoreflow.stages.config import RestoreConfig
    from restoreflow.stages.restore import restore_one

    prior = save_tiny_prior(tmp_path / "prior")
    store, ids = _prepare_store(tmp_path)
    cfg = RestoreConfig(degradation=DEGRADATION, prior=prior,
                        restore={"sampler": "ddpg", "steps": STEPS})  # slow enough to kill

    cluster = LocalCluster(n_workers=0, dashboard_address=None, host="127.0.0.1")
    addr = cluster.scheduler_address
    log = open(tmp_path / "workers.log", "wb")
    workers = {n: _worker(addr, n, log) for n in ("w0", "w1")}
    killed: dict = {}
    stop = threading.Event()

    def killer():
        """Kill the worker (nanny and worker process) running the first restore task."""
        with Client(addr, timeout=30) as c:
            while not stop.is_set():
                info = c.scheduler_info(n_workers=-1)["workers"]
                for waddr, keys in c.processing().items():
                    if keys:  # the flow submits only restore tasks
                        name = info[waddr]["name"]
                        time.sleep(0.5)  # well inside the task (imports, sampling)
                        os.killpg(workers[name].pid, signal.SIGKILL)
                        killed.update(name=name, keys=[str(k) for k in keys], at=time.time())
                        return
                time.sleep(0.05)

    try:
        with Client(addr) as c:
            c.wait_for_workers(2, timeout=90)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        runner = DaskTaskRunner(address=addr)
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            res = restore_flow.with_options(task_runner=runner)(
                store=store.uri, cfg=cfg, y_collection="degraded")
        stop.set()
        t.join(10)
        with Client(addr) as c:
            survivors = [w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values()]
    finally:
        stop.set()
        for p in workers.values():
            if group_members(p.pid):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        log.close()
        cluster.close()

    print(f"\nworker death: killed {killed.get('name')} while it ran {killed.get('keys')}; "
          f"survivors {survivors}; restored {len(res['restored'])}/{N_IMAGES}")
    assert killed, "no restore task was seen running"
    assert survivors == [n for n in ("w0", "w1") if n != killed["name"]]
    assert sorted(res["restored"]) == sorted(ids) and res["skipped"] == []
    from restoreflow.storage.store import TileStore

    ref = TileStore(tmp_path / "ref", store.settings, tile_size=16)
    for i in ids:
        assert store.status("restored", i) == "complete"
        got = store.read("restored", i)
        assert not np.isnan(got).any()
        # the same image restored in this process, from the same stored y
        ref.create_image("input", i, store.shape("input", i), store.read("input", i).dtype,
                         attrs=store.attrs("input", i), overwrite=True)
        ref.write_image("input", i, store.read("input", i))
        ref.mark_complete("input", i)
        ref.create_image("degraded", i, store.shape("degraded", i), np.float32,
                         attrs=store.attrs("degraded", i), overwrite=True)
        ref.write_image("degraded", i, store.read("degraded", i))
        ref.mark_complete("degraded", i)
        # with the workers' one thread: float32 convolutions round differently with the
        # thread count on some CPUs (AVX2), and the test is about the rerun, not threads
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            restore_one(ref, i, cfg, "degraded")
        finally:
            torch.set_num_threads(threads)
        assert np.array_equal(got, ref.read("restored", i)), i
