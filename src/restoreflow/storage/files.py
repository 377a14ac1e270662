"""Small plain files under a store's root (tables, manifests, adapters, indexes): a
store-relative path is checked (no absolute paths, no ``..``, no zarr metadata), then
written atomically, read, tested or listed through the store's fsspec filesystem.

Functions of a :class:`~restoreflow.storage.store.TileStore`; its methods of the same
names call them.
"""

from __future__ import annotations

import os
import posixpath
import re


def rel_path(path: str) -> str:
    """Normalise a store-relative path; refuse absolute paths and ``..``."""
    if not isinstance(path, str) or not path:
        raise ValueError("empty path")
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) or "://" in path:
        raise ValueError(f"{path!r}: must be relative to the store root")
    parts = path.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        raise ValueError(f"{path!r}: '..' is not allowed")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{path!r}: names no file")
    rel = posixpath.join(*parts)
    if parts[-1] == "zarr.json":
        raise ValueError(f"{path!r}: zarr metadata is managed by the store")
    return rel


def put_bytes(store, path: str, data: bytes) -> None:
    """Write a small file under the store root atomically (temp+rename locally, with
    the permissions of a normal write; one PUT on S3)."""
    rel = rel_path(path)
    full = store._full(rel)
    if store.is_s3:
        store.fs.pipe_file(full, bytes(data))
        return
    from restoreflow.storage.writers import write_atomic

    os.makedirs(os.path.dirname(full), exist_ok=True)
    write_atomic(full, bytes(data))  # a normal file's permissions (0o666 & ~umask)


def get_bytes(store, path: str) -> bytes:
    """Read a small file under the store root (FileNotFoundError if missing)."""
    full = store._full(rel_path(path))
    if store.is_s3:
        return store.fs.cat_file(full)
    with open(full, "rb") as f:
        return f.read()


def exists(store, path: str) -> bool:
    full = store._full(rel_path(path))
    if store.is_s3:
        store.fs.invalidate_cache()
    return bool(store.fs.exists(full))


def list_files(store, prefix: str) -> list[str]:
    """Store-relative paths of the files under ``prefix`` (recursive, sorted)."""
    rel = rel_path(prefix)
    full = store._full(rel)
    if store.is_s3:
        store.fs.invalidate_cache()
    if not store.fs.exists(full):
        return []
    found = store.fs.find(full)
    base = store._full("")
    out = []
    for p in found:
        p = p[len(base):].lstrip("/\\").replace("\\", "/")
        out.append(p)
    return sorted(out)


def listed_ids(store, collection: str) -> set[str]:
    """The image ids of ``collection`` from a directory listing, whatever their status
    (no metadata read: cheap on a large collection)."""
    try:
        listed = store.fs.ls(store._full(collection), detail=False)
    except FileNotFoundError:
        return set()
    return {posixpath.basename(str(p).replace("\\", "/").rstrip("/"))
            for p in listed} - {"zarr.json"}
