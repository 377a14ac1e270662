"""No process outlives a verb that started it, however the verb dies.

A verb that runs flows starts child processes it does not control the start of: the
ephemeral Prefect API server (a uvicorn subprocess), the local Dask cluster's nannies and
workers, SeaweedFS for ``serve-s3``. When the verb is SIGKILLed (OOM killer, a node drain)
nothing in it can stop them. So such a verb first starts this watchdog: a small process in
a session of its own that records the verb's descendants twice a second and, once the verb
is gone, terminates those still alive (SIGTERM, then SIGKILL after 3 s). A recorded pid is
only signalled while its start time is the recorded one (a reused pid is left alone).

Run as ``python -m restoreflow.watchdog PID``; :func:`watch_this_process` starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

_STARTED = False


def watch_this_process() -> None:
    """Start the watchdog of this process (once; not where ``RESTOREFLOW_WATCHDOG=0``)."""
    global _STARTED
    if _STARTED or os.environ.get("RESTOREFLOW_WATCHDOG") == "0":
        return
    _STARTED = True
    subprocess.Popen([sys.executable, "-m", "restoreflow.watchdog", str(os.getpid())],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def watch(pid: int, every: float = 0.5, grace: float = 3.0) -> list[int]:
    """Record the descendants of ``pid`` until it is gone, then end those still alive;
    returns the pids it signalled."""
    import psutil

    try:
        verb = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    known: dict[int, float] = {}
    me = os.getpid()  # a child of the verb too
    while True:
        try:
            if verb.status() == psutil.STATUS_ZOMBIE:
                break
            for child in verb.children(recursive=True):
                if child.pid == me:
                    continue
                try:
                    known.setdefault(child.pid, child.create_time())
                except psutil.Error:
                    continue
        except psutil.NoSuchProcess:
            break
        time.sleep(every)
    left = []
    for p, started in known.items():
        try:
            proc = psutil.Process(p)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.Error:
            continue
    for proc in left:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return [p.pid for p in left]


if __name__ == "__main__":
    watch(int(sys.argv[1]))
