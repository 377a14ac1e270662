"""A rich progress bar over Prefect futures as they complete (CLI runs), moved on by the
progress that tasks on Dask workers report while they run (a large image's restoration
takes hours on a CPU: its bar must not wait for it to finish)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator

#: the Dask event topic of work done inside a task: {"key": ..., "fraction": 0..1}
TOPIC = "restoreflow-progress"


def report_progress(key: str, every: float = 1.0) -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` callback for work inside a task on a Dask worker: it
    sends ``done / total`` of ``key`` to the driver as a worker event, at most every
    ``every`` seconds (and at the end). None outside a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    last = [float("-inf")]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if total > 0 and (done >= total or now - last[0] >= every):
            last[0] = now
            worker.log_event(TOPIC, {"key": key, "fraction": min(1.0, done / total)})

    return progress


@contextlib.contextmanager
def worker_progress(client, on_fraction: Callable[[str, float], None]) -> Iterator[None]:
    """Call ``on_fraction(key, fraction)`` (in the client's thread) for each progress
    event the workers send while the block runs; nothing without a Dask client."""
    if client is None:
        yield
        return

    def handler(event) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, dict) and "key" in msg:
            on_fraction(str(msg["key"]), float(msg.get("fraction", 0.0)))

    client.subscribe_topic(TOPIC, handler)
    try:
        yield
    finally:
        client.unsubscribe_topic(TOPIC)


def _flow_dask_client():
    """The Dask client of the running flow's task runner (None if it has none)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(getattr(ctx, "task_runner", None), "client", None)
    return client if hasattr(client, "subscribe_topic") else None


def track_futures(futures: list, description: str, show: bool,
                  sizes: list[int] | None = None, artifact: str | None = None,
                  keys: list[str] | None = None) -> Iterator:
    """Yield futures as they finish, with a rich progress bar (done / total, ETA) if
    ``show``; ``sizes`` are the units of work per future (images, or tiles of a large
    image; 1 each by default), so the ETA weighs a large image by its size, and ``keys``
    name the futures' progress reports (:func:`report_progress`), which move the bar
    while they run. With ``artifact``, a Prefect progress artifact of that description
    follows them too (the UI's bar)."""
    from prefect.futures import as_completed

    done: Iterable = as_completed(futures)
    if artifact and futures:
        done = _with_artifact(done, len(futures), artifact)
    if not show or not futures:
        yield from done
        return
    sizes = sizes or [1] * len(futures)
    size = {id(f): s for f, s in zip(futures, sizes, strict=True)}
    key_of = dict(zip(map(id, futures), keys, strict=True)) if keys else {}
    by_key = dict(zip(keys, sizes, strict=True)) if keys else {}
    lock, running, finished = threading.Lock(), {}, [0]

    with progress_bar() as bar:
        t = start_task(bar, description, sum(sizes))

        def show_now() -> None:
            bar.update(t, completed=finished[0] + sum(by_key[k] * x for k, x in running.items()))

        def on_fraction(key: str, fraction: float) -> None:
            with lock:
                if key in by_key and running.get(key, 0.0) < fraction:
                    running[key] = fraction
                    show_now()

        with worker_progress(_flow_dask_client() if keys else None, on_fraction):
            for f in done:
                with lock:
                    running.pop(key_of.get(id(f)), None)
                    by_key.pop(key_of.get(id(f)), None)
                    finished[0] += size[id(f)]
                    show_now()
                yield f


def _with_artifact(done: Iterable, total: int, description: str) -> Iterator:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    bar = create_progress_artifact(0.0, description=description)
    for n, f in enumerate(done, 1):
        yield f
        update_progress_artifact(bar, 100.0 * n / total)


def progress_bar(get_time=None):
    """The rich progress bar of long work: done / total, elapsed time and an ETA. Its
    speed is estimated over the whole run (rich's default, the last 30 s, gives no ETA
    at all while one image takes longer than that)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    return Progress(*cols, transient=False, speed_estimate_period=7 * 24 * 3600,
                    get_time=get_time)


def start_task(bar, description: str, total: int):
    """A task of ``bar`` whose speed counts from now, so the first finished image
    already gives an ETA (rich needs a sample before it)."""
    task = bar.add_task(description, total=total)
    bar.advance(task, 0)
    return task
