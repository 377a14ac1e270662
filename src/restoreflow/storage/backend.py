"""Connecting a store to its filesystem: the zarr Store and the fsspec filesystem of a
local root or an S3 prefix; which errors of the S3 client stack mean "store unreachable";
and closing the aiohttp sessions of the async s3fs instances zarr uses when the
interpreter exits (process-wide state, not a store's).
"""
from __future__ import annotations

import atexit
import warnings
import weakref

_ASYNC_FS: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def is_backend_error(exc: BaseException) -> bool:
    """An error of the S3 client stack that is not an OSError (botocore's
    EndpointConnectionError, aiohttp's ClientError, ...): the store is unreachable or
    refused the request. Callers treat it like an OSError of a local store."""
    return type(exc).__module__.startswith(("botocore", "aiobotocore", "aiohttp"))


async def _cancel_other_tasks() -> None:
    import asyncio

    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _close_async_filesystems() -> None:
    """Close the aiohttp sessions of async s3fs instances in zarr's event loop at exit
    (otherwise aiohttp prints "Unclosed client session" at interpreter shutdown). Chunk
    writes still pending after a failed write (the store went away) are cancelled first,
    or asyncio prints "Task was destroyed but it is pending!" for each of them (and
    "coroutine ... was never awaited" for those that never started)."""
    from zarr.core.sync import sync

    if _ASYNC_FS:
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                                category=RuntimeWarning)
        try:
            sync(_cancel_other_tasks(), timeout=2)
        except Exception:  # noqa: BLE001 - best effort during interpreter shutdown
            pass
    for fs in list(_ASYNC_FS):
        s3 = getattr(fs, "_s3", None)
        if s3 is None:
            continue
        try:
            sync(s3.__aexit__(None, None, None), timeout=2)
        except Exception:  # noqa: BLE001 - best effort during interpreter shutdown
            pass
        fs._s3 = None


def _track_async_fs(fs) -> None:
    global _ATEXIT_REGISTERED
    _ASYNC_FS.add(fs)
    if not _ATEXIT_REGISTERED:
        import zarr.core.sync  # noqa: F401 - registered after zarr's, so runs before it

        atexit.register(_close_async_filesystems)
        _ATEXIT_REGISTERED = True


def open_zarr_store(root: str, is_s3: bool, settings):
    """The zarr Store of a store root: LocalStore, or FsspecStore over async s3fs."""
    if is_s3:
        import s3fs
        from zarr.storage import FsspecStore

        fs = s3fs.S3FileSystem(
            asynchronous=True, use_listings_cache=False,
            **settings.storage_options(),
        )
        _track_async_fs(fs)
        return FsspecStore(fs, path=root)
    from zarr.storage import LocalStore

    return LocalStore(root)


def open_filesystem(is_s3: bool, settings):
    """A synchronous fsspec filesystem for a store's non-zarr files (tables, small blobs)."""
    if is_s3:
        import s3fs

        return s3fs.S3FileSystem(use_listings_cache=False, **settings.storage_options())
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()
