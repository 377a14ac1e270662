"""Prefect tasks of the pipeline: each calls one stage function (see restoreflow.stages).

Tasks pass store URIs, image ids, small dicts and the restore settings (one
RestoreConfig), never tensors. Model tasks (restore, which includes retrieval and
adaptation so the adapter never leaves its worker) are
submitted by the flows inside ``model_placement``; the rest go to any worker. Model
tasks receive the device setting as given (``auto`` included) and resolve it on the
worker that runs them.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from restoreflow.settings import resolve_device
from restoreflow.stages.config import RestoreConfig
from restoreflow.tasks import names
from restoreflow.tasks.common import open_store

RETRY = dict(retries=2, retry_delay_seconds=[2, 10])


@task(name="ingest", task_run_name=names.ingest_task_name, cache_policy=NO_CACHE,
      **RETRY)
def ingest_task(store_uri: str, sources: list[str]) -> dict:
    from restoreflow.stages.ingest import ingest_sources

    return ingest_sources(open_store(store_uri), sources)


@task(name="simulate", task_run_name=names.simulate_task_name, cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[1, 5])
def simulate_task(store_uri: str, image_ids: list[str], degradation: str, seed: int,
                  collection: str) -> list[dict]:
    """Worker side: the driver has created the output images (``prepare_simulate``)."""
    from restoreflow.degradation import DegradationSpec
    from restoreflow.stages.simulate import simulate_tiles

    store, spec = open_store(store_uri), DegradationSpec.parse(degradation)
    return [{"image_id": i, "status": "written",
             "mode": simulate_tiles(store, i, spec, seed=seed, collection=collection)}
            for i in image_ids]


@task(name="build-index", task_run_name=names.index_task_name, cache_policy=NO_CACHE,
      **RETRY)
def index_task(store_uri: str, image_ids: list[str], name: str, embedder: str,
               device: str) -> dict:
    from restoreflow.stages.adapt import build_reference_index

    return build_reference_index(open_store(store_uri), image_ids, name, embedder,
                                 resolve_device(device))


@task(name="build-matched-index", task_run_name=names.matched_index_task_name,
      cache_policy=NO_CACHE, **RETRY)
def matched_index_task(store_uri: str, name: str, degradation: str, seed: int, embedder: str,
                       device: str) -> dict:
    from restoreflow.degradation import DegradationSpec
    from restoreflow.stages.adapt import build_matched_index

    return build_matched_index(open_store(store_uri), name, DegradationSpec.parse(degradation),
                               seed, embedder, resolve_device(device))


@task(name="restore-image", task_run_name=names.restore_task_name, cache_policy=NO_CACHE,
      **RETRY)
def restore_task(store_uri: str, image_id: str, cfg: RestoreConfig, y_collection: str,
                 out: str, device: str) -> dict:
    from restoreflow.stages.restore import restore_stored
    from restoreflow.tasks.progress import report_progress

    return restore_stored(open_store(store_uri), image_id, cfg, y_collection, out,
                          resolve_device(device), report_progress(image_id))


@task(name="truth-metrics", task_run_name=names.metrics_task_name, cache_policy=NO_CACHE,
      **RETRY)
def metrics_task(store_uri: str, image_ids: list[str], out: str) -> dict[str, dict]:
    """PSNR/SSIM against the input, for a batch of images."""
    from restoreflow.stages.calibrate import truth_metrics

    store = open_store(store_uri)
    return {i: truth_metrics(store, i, out) for i in image_ids}


@task(name="write-intervals", task_run_name=names.intervals_task_name, cache_policy=NO_CACHE,
      **RETRY)
def intervals_task(store_uri: str, image_id: str, pixel: dict) -> str:
    from restoreflow.stages.calibrate import write_intervals

    write_intervals(open_store(store_uri), image_id, pixel)
    return image_id


@task(name="export", task_run_name=names.export_task_name, cache_policy=NO_CACHE,
      **RETRY)
def export_task(store_uri: str, collection: str, fmt: str, out_dir: str,
                image_ids: list[str]) -> list[str]:
    from restoreflow.stages.export import export_images

    return export_images(open_store(store_uri), collection, fmt, out_dir, image_ids)
