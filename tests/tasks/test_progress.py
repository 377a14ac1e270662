"""Progress bars give an ETA from the first finished image, however long it took (rich's
default estimate looks at the last 30 s only: no ETA while an image takes longer;
issue 30, item 5)."""

from __future__ import annotations

from restoreflow.tasks.progress import progress_bar, start_task


def test_an_image_slower_than_30_s_still_gives_an_eta():
    now = [0.0]
    bar = progress_bar(get_time=lambda: now[0])
    now[0] = 1.0
    task = start_task(bar, "restore", 4)
    now[0] = 91.0  # the first image took 90 s
    bar.advance(task, 1)
    now[0] = 92.0
    eta = bar.tasks[0].time_remaining
    assert eta is not None and 250 < eta < 300, eta  # 3 images left at ~90 s each


def test_the_restore_bar_counts_tiles():
    """A large image weighs by its tiles in the restore bar (issue 30, item 5)."""
    from restoreflow.stages.restore import tile_count

    assert tile_count((3, 64, 64), 256) == 1
    assert tile_count((3, 1000, 600), 256) == 4 * 3
    assert tile_count((1, 20000, 20000), 256) == 79 * 79


def _work_with_progress(key):
    from restoreflow.tasks.progress import report_progress

    progress = report_progress(key, every=0.0)
    for i in range(1, 5):
        progress(i, 4)
    return key


def test_a_task_on_a_dask_worker_moves_the_bar_while_it_runs():
    """Progress inside a task reaches the driver as worker events (a large image moves
    its bar before it finishes); outside a worker there is nothing to report to."""
    import time

    from distributed import Client, LocalCluster

    from restoreflow.tasks.progress import report_progress, worker_progress

    assert report_progress("x") is None
    seen = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        with worker_progress(client, lambda k, f: seen.append((k, f))):
            assert client.submit(_work_with_progress, "img").result() == "img"
            t0 = time.monotonic()
            while len(seen) < 4 and time.monotonic() - t0 < 10:
                time.sleep(0.05)
    assert seen == [("img", 0.25), ("img", 0.5), ("img", 0.75), ("img", 1.0)]
