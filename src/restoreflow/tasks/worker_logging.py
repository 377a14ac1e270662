"""Dask worker preload (``LocalCluster(preload=[__name__])``): keep the terminal clean.

When the embedded cluster shuts down, a worker whose heartbeat was in flight logs
"Failed to communicate with scheduler during heartbeat" with the closed stream's
traceback on the CLI's stderr, after the run has ended well. That record loses its
traceback and drops to DEBUG; nothing else changes."""

from __future__ import annotations

import logging

HEARTBEAT = "Failed to communicate with scheduler during heartbeat"


class HeartbeatNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if HEARTBEAT in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, HeartbeatNoise) for f in logger.filters):
        logger.addFilter(HeartbeatNoise())


def dask_setup(worker=None) -> None:  # noqa: ARG001 - dask's preload hook
    install()
