"""Driver side: group images into batches for light CPU tasks."""

from __future__ import annotations

from restoreflow.storage.store import TileStore


def cpu_batches(store: TileStore, image_ids: list[str], collection: str = "input",
                max_pixels: int = 4 * 2**20, max_images: int = 16) -> list[list[str]]:
    """Group image ids for light CPU tasks (simulate, metrics): Prefect on Dask costs
    ~0.1 s per task on a small machine, more than such a task's work on a small image.
    A batch holds at most ``max_images`` images and ``max_pixels`` pixels (a larger image
    goes alone), and there are at least two batches per Dask worker when there are
    enough images, so the workers stay evenly loaded."""
    per_batch = max(1, min(max_images, -(-len(image_ids) // (2 * _n_workers()))))
    out: list[list[str]] = []
    pixels = 0
    for i in image_ids:
        _, h, w = store.shape(collection, i)
        if out and len(out[-1]) < per_batch and pixels + h * w <= max_pixels:
            out[-1].append(i)
            pixels += h * w
        else:
            out.append([i])
            pixels = h * w
    return out


def _n_workers() -> int:
    """Workers of the running flow's Dask cluster (4 outside a Dask-run flow)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(getattr(ctx, "task_runner", None), "client", None)
    try:
        return max(1, len(client.scheduler_info()["workers"]))
    except (AttributeError, KeyError, TypeError):
        return 4
