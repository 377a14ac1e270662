"""A rich progress bar over Prefect futures as they complete (CLI runs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def track_futures(futures: list, description: str, show: bool,
                  sizes: list[int] | None = None, artifact: str | None = None) -> Iterator:
    """Yield futures as they finish, with a rich progress bar (done / total, ETA) if
    ``show``; ``sizes`` are the units of work per future (images, or tiles of a large
    image; 1 each by default), so the ETA weighs a large image by its size. With
    ``artifact``, a Prefect progress artifact of that description follows them too (the
    UI's bar)."""
    from prefect.futures import as_completed

    done: Iterable = as_completed(futures)
    if artifact and futures:
        done = _with_artifact(done, len(futures), artifact)
    if not show or not futures:
        yield from done
        return
    with progress_bar() as bar:
        size = {id(f): s for f, s in zip(futures, sizes or [1] * len(futures), strict=True)}
        t = start_task(bar, description, sum(size.values()))
        for f in done:
            bar.advance(t, size[id(f)])
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
