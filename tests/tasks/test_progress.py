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
