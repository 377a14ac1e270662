"""A rich progress bar over Prefect futures as they complete (CLI runs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def track_futures(futures: list, description: str, show: bool,
                  sizes: list[int] | None = None) -> Iterator:
    """Yield futures as they finish, with a rich progress bar (images, ETA) if ``show``;
    ``sizes`` are the images per future (1 each by default)."""
    from prefect.futures import as_completed

    done: Iterable = as_completed(futures)
    if not show or not futures:
        yield from done
        return
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
    with Progress(*cols, transient=False) as bar:
        size = {id(f): s for f, s in zip(futures, sizes or [1] * len(futures), strict=True)}
        t = bar.add_task(description, total=sum(size.values()))
        for f in done:
            bar.advance(t, size[id(f)])
            yield f
