"""Where tasks run: the Dask task runner and the resource annotation for model tasks.

Embedded default: a ``LocalCluster`` started by the flow (processes, one thread each,
bound to 127.0.0.1; the scheduler's HTTP routes take a random port, not 8787). Each
local worker declares one unit of the model resource (default ``GPU``), so model tasks
still run on a laptop with no GPU, one per worker.
External: ``RESTOREFLOW_DASK_ADDRESS=tcp://host:8786`` (any dask-distributed scheduler:
dask-jobqueue on SLURM, Kubernetes, ...); start GPU workers with
``dask worker ADDR --resources GPU=1 --nthreads 1``.

Model tasks (adapt, restore, posterior samples, prior training) are submitted inside
:func:`model_placement`, which asks the scheduler for one unit of the resource, so a GPU
never runs two model tasks at once. CPU tasks (ingest, simulate, metrics, export) are
submitted without it and go to any worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from restoreflow.settings import Settings


def dask_task_runner(settings: Settings, n_workers: int | None = None):
    """A prefect-dask ``DaskTaskRunner`` for the configured cluster."""
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_class="restoreflow.tasks.runner.local_cluster",
        cluster_kwargs={
            "n_workers": n_workers or settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            # the scheduler always serves its HTTP health routes; a random loopback port
            # keeps two embedded clusters from colliding on 8787
            "dashboard_address": "127.0.0.1:0",
            "resources": {settings.gpu_resource: 1},
            "host": "127.0.0.1",
        },
    )


def local_cluster(**kwargs):
    """A ``LocalCluster`` whose workers report task runs to the driver's Prefect API.

    Called by the task runner inside the flow run, when the API is known. Without this,
    each worker of an in-process (ephemeral) Prefect starts a server of its own: seconds
    of start-up per worker, and task runs the driver's UI never sees."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the driver's ephemeral server (one per process)
        url = server.api_url if server.server_process is not None else None
    kwargs["preload"] = [*kwargs.get("preload", []), "restoreflow.tasks.worker_logging"]
    return LocalCluster(env={"PREFECT_API_URL": url} if url else {}, **kwargs)


@contextlib.contextmanager
def model_placement(settings: Settings) -> Iterator[None]:
    """Submit model tasks inside this block: they need one unit of the model resource."""
    import dask

    with dask.annotate(resources={settings.gpu_resource: 1}):
        yield


def n_workers() -> int:
    """Workers of the running flow's Dask cluster (4 outside a Dask-run flow)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(getattr(ctx, "task_runner", None), "client", None)
    try:
        return max(1, len(client.scheduler_info()["workers"]))
    except (AttributeError, KeyError, TypeError):
        return 4
