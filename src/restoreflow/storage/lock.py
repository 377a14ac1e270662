"""A store-wide writer lock: one driver (a pipeline run, an ingest, a restore, ...) at a
time changes a store's images and tables.

The store's concurrency contract (only the driver creates images, changes attrs and
writes tables) assumes ONE driver. Two runs started at once on the same store would
otherwise both create the same image (``create_image(overwrite=True)`` deletes the
other run's tiles while its workers write them), restore it twice, and lose each
other's rows in the read-modify-write of ``tables/*.json``. The second driver waits for
the lock (up to ``RESTOREFLOW_LOCK_TIMEOUT`` seconds), then finds the work done.

- Local stores: ``<store>/.locks/<name>.lock``, opened with ``O_CREAT`` and held with an
  exclusive ``flock``. The kernel releases it when the holder exits or is killed, so a
  crashed run never leaves a stale lock behind. The file holds the holder's pid, host,
  start time and what it does (for the waiting run's message).
- S3 stores: an object ``<prefix>/.locks/<name>.lock`` created with a conditional PUT
  (``If-None-Match: *``, create-if-absent) and deleted on release. The holder renews it
  (rewrites it) every quarter of ``settings.lock_lease`` seconds from a heartbeat thread.
  A lock left by a killed process of this host (its pid is gone, or now belongs to a
  process started later) is taken over at once; one from another host once the object
  has not been renewed for a lease (its LastModified, the server's clock). Locks written
  without a lease (older versions) are honoured until the timeout, and the error names
  the holder and the object to delete.

The lock is re-entrant within a process (a flow holding it may call the ingest that
takes it too). ``.locks`` cannot clash with a collection (names start with a letter or
digit) and is ignored by zarr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

LOCK_DIR = ".locks"

_held: dict[str, int] = {}  # lock key -> depth, in this process
_held_guard = threading.Lock()


class StoreLocked(RuntimeError):
    """Another driver holds the store's lock and did not release it in time."""


def _process_identity(pid) -> str | None:
    """boot id + start time of process ``pid`` (Linux), which a reused pid does not
    share; None when unknown."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        stat = open(f"/proc/{int(pid)}/stat").read()
        return f"{boot}:{stat[stat.rindex(')') + 2:].split()[19]}"
    except (OSError, ValueError, IndexError, TypeError):
        return None


def _holder_info(what: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "process": _process_identity(os.getpid()), "token": uuid.uuid4().hex}


def describe_holder(info: dict | None) -> str:
    if not info:
        return "another process (holder unknown)"
    return (f"{info.get('what') or 'another process'} (pid {info.get('pid')} on host "
            f"{info.get('host')}, since {info.get('since')})")


def _parse(raw: bytes) -> dict | None:
    try:
        info = json.loads(raw.decode() or "null")
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # exists (not ours), or unreadable: assume alive
    return True


class _LocalLock:
    def __init__(self, root: str, name: str) -> None:
        self.path = os.path.join(root, LOCK_DIR, f"{name}.lock")
        self.fd: int | None = None

    def try_acquire(self, info: dict) -> bool:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return True

    def holder(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                return _parse(f.read())
        except OSError:
            return None

    def release(self) -> None:
        import fcntl

        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    @property
    def where(self) -> str:
        return self.path


def _exists_error(exc: OSError) -> bool:
    """A create-if-absent PUT refused because the object exists (412 Precondition
    Failed; 409 ConditionalRequestConflict while another create is in flight)."""
    if isinstance(exc, FileExistsError):
        return True
    resp = getattr(exc.__cause__, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
        return True
    return "pre-condition" in str(exc).lower() or "precondition failed" in str(exc).lower()


class _S3Lock:
    def __init__(self, fs, root: str, name: str, lease: float = 120.0) -> None:
        self.fs = fs
        self.path = f"{root}/{LOCK_DIR}/{name}.lock"
        self.token: str | None = None
        self.lease = lease
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self, info: dict) -> bool:
        info = {**info, "lease_s": self.lease}
        try:
            self.fs.pipe_file(self.path, json.dumps(info).encode(), mode="create")
        except OSError as exc:
            if not _exists_error(exc):
                raise
            if self._take_over_stale():
                return self.try_acquire(info)
            return False
        self.token = info["token"]
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(info,), daemon=True,
                                      name="restoreflow-lock-heartbeat")
        self._beat.start()
        return True

    def _heartbeat(self, info: dict) -> None:
        """Rewrite the lock every quarter lease while it is still ours."""
        while not self._stop.wait(self.lease / 4):
            try:
                cur = _parse(self.fs.cat_file(self.path))
                if cur is None or cur.get("token") != info["token"]:
                    return  # taken over or released: never recreate it
                renewed = {**info, "renewed": datetime.now(UTC).isoformat(timespec="seconds")}
                self.fs.pipe_file(self.path, json.dumps(renewed).encode())
            except Exception as exc:  # noqa: BLE001 - an outage: retry at the next beat
                logging.getLogger(__name__).debug("lock heartbeat %s: %s", self.where, exc)

    def _age(self) -> float | None:
        """Seconds since the lock object was last written (server clock), None unknown."""
        try:
            modified = self.fs.info(self.path, refresh=True).get("LastModified")
        except Exception:  # noqa: BLE001 - missing or unreachable: unknown
            return None
        if not isinstance(modified, datetime):
            return None
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return (datetime.now(UTC) - modified).total_seconds()

    def _take_over_stale(self) -> bool:
        """Delete the lock when its holder was a process of this host that is gone, or
        when a leased lock has not been renewed for its lease."""
        info = self.holder()
        if info is None:
            return False
        if info.get("host") != socket.gethostname():
            lease = info.get("lease_s")
            age = self._age() if lease else None
            if age is None or age <= float(lease):
                return False
            if self.holder() != info:  # renewed or replaced meanwhile
                return False
            logging.getLogger(__name__).warning(
                "taking over the store lock %s: %s has not renewed it for %.0f s",
                self.where, describe_holder(info), age)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)
            return True
        recorded = info.get("process")
        if _pid_alive(info.get("pid")) and (
                recorded is None or _process_identity(info.get("pid")) in (recorded, None)):
            return False  # alive, and not a later process that reused the pid
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)
        return True

    def holder(self) -> dict | None:
        try:
            return _parse(self.fs.cat_file(self.path))
        except Exception:  # noqa: BLE001 - missing, or the store is unreachable: unknown
            return None

    def release(self) -> None:
        """Delete the lock object if it is still ours. Best effort: when the store is
        unreachable (the reason the run is failing, often) the object stays, and the next
        run on this host takes it over (its pid is gone)."""
        if self.token is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
            self._beat = None
        token, self.token = self.token, None
        try:
            info = _parse(self.fs.cat_file(self.path))
            if info is not None and info.get("token") == token:
                self.fs.rm_file(self.path)
        except Exception as exc:  # noqa: BLE001 - must not mask the run's own error
            logging.getLogger(__name__).debug("could not release the store lock %s: %s",
                                              self.where, exc)

    @property
    def where(self) -> str:
        return f"s3://{self.path}"


@contextlib.contextmanager
def store_lock(store, what: str, timeout: float | None = None, name: str = "writer",
               poll: float = 0.5, log=None) -> Iterator[None]:
    """Hold the store's writer lock for the block (re-entrant within this process).

    Waits up to ``timeout`` seconds (default ``settings.lock_timeout``) while another
    driver holds it, logging once who that is; then raises :class:`StoreLocked` naming
    the holder.
    """
    key = f"{store.uri}|{name}"
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    timeout = store.settings.lock_timeout if timeout is None else timeout
    lock = (_S3Lock(store.fs, store._root, name, store.settings.lock_lease) if store.is_s3
            else _LocalLock(store._root, name))
    info = _holder_info(what)
    deadline = time.monotonic() + timeout
    told = False
    while not lock.try_acquire(info):
        holder = lock.holder()
        if time.monotonic() >= deadline:
            raise StoreLocked(
                f"store {store.uri} is in use by {describe_holder(holder)}; gave up after "
                f"{timeout:.0f} s (RESTOREFLOW_LOCK_TIMEOUT). If that process is gone, "
                f"delete {lock.where}"
            )
        if not told and log is not None:
            log(f"store {store.uri} is in use by {describe_holder(holder)}; waiting up to "
                f"{timeout:.0f} s for it to finish")
            told = True
        time.sleep(poll)
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(key, None)
        lock.release()
