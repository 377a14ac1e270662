"""The tile store: a zarr v3 hierarchy on a local disk or S3, one class over fsspec.

Layout (see docs/store-layout.md)::

    <store>/zarr.json                      root group, attrs {"restoreflow_layout": 1,
                                                                  "tile_size": T}
    <store>/<collection>/zarr.json         one group per collection (input, degraded, ...)
    <store>/<collection>/<image_id>/       one group per image, attrs = provenance + status
        pixels                             array dims ("band", "y", "x"), shape (C, H, W),
                                           chunks (C, T, T): one tile per chunk
    <store>/tables/<name>.json             small JSON tables (list of row dicts)

Concurrency contract (pangeo-forge style): only the driver process creates images and
changes metadata (:meth:`TileStore.create_image`, :meth:`TileStore.mark_complete`,
tables); workers only call :meth:`TileStore.write_region` with chunk-aligned regions, so
no two writers ever touch the same object. Region writes are idempotent (writing the
same tile twice stores the same bytes); :meth:`TileStore.create_image` with
``overwrite=True`` and :meth:`TileStore.delete_image` are not.

Pixel values: collection ``input`` holds the source values in their native dtype.
Every other (derived) collection holds float32 in normalised units, where
``normalised = (raw - norm_offset) / norm_scale`` with the input image's attrs.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import posixpath
import re
import warnings
import weakref
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from restoreflow.settings import Settings, get_settings
from restoreflow.storage.layout import INPUT

LAYOUT_VERSION = 1

PIXELS = "pixels"
DIMS = ("band", "y", "x")
TABLES_DIR = "tables"
SOURCE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
DERIVED_DTYPE = "float32"
STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TABLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_RESERVED = {TABLES_DIR, "zarr.json"}
# what a store's root holds while a driver creates it (see TileStore._ensure_root)
_STORE_ROOT_ENTRY = re.compile(r"^(zarr\.json|zarr\.[0-9a-f]{32}\.partial|\.locks)$")


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


@contextmanager
def _quiet_listing():
    """Silence zarr's warning about non-zarr entries met while listing (our tables/ and
    blobs, and the empty directories some S3 servers keep after deletes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        yield


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in _RESERVED:
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-128 characters [A-Za-z0-9._-], "
            f"starting with a letter or digit, not {sorted(_RESERVED)}"
        )
    return name


def jsonable(obj: Any) -> Any:
    """Turn attrs into strict JSON values (numpy scalars, tuples, non-finite floats...)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", errors="replace")
    return str(obj)


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int, int, int, int, int]]:
    """Tiles ``(ty, tx, y0, y1, x0, x1)`` covering an ``height x width`` image, row-major.

    Edge tiles are cut at the image border (``y1 <= height``), matching zarr's chunk grid.
    """
    return [
        (ty, tx, y0, min(y0 + tile, height), x0, min(x0 + tile, width))
        for ty, y0 in enumerate(range(0, height, tile))
        for tx, x0 in enumerate(range(0, width, tile))
    ]


def normalisation(array: np.ndarray) -> tuple[float, float]:
    """``(norm_offset, norm_scale)`` with ``normalised = (raw - offset) / scale`` in [0, 1].

    uint8: 0/255; uint16: 0/65535; other dtypes: 0/1 when the data already lie in [0, 1],
    else data min / (max - min); a constant image gets scale 1.
    """
    dt = np.dtype(array.dtype)
    if dt == np.uint8:
        return 0.0, 255.0
    if dt == np.uint16:
        return 0.0, 65535.0
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if hi == lo:
        return lo, 1.0
    return lo, hi - lo


def to_normalised(raw: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """float32 ``(raw - offset) / scale`` (computed in float64)."""
    return ((np.asarray(raw, dtype=np.float64) - offset) / scale).astype(np.float32)


def from_normalised(norm: np.ndarray, offset: float, scale: float, dtype: str) -> np.ndarray:
    """Invert :func:`to_normalised` into ``dtype`` (round and clip for integer dtypes)."""
    raw = np.asarray(norm, dtype=np.float64) * scale + offset
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        raw = np.nan_to_num(raw, nan=0.0)
        return np.clip(np.rint(raw), info.min, info.max).astype(dt)
    return raw.astype(dt)


class TileStore:
    """A restoreflow store at ``uri`` (local path, ``file://`` URI or ``s3://bucket/prefix``).

    ``settings`` supplies S3 endpoint and credentials (``Settings.storage_options()``) and
    the default tile size; ``tile_size`` overrides it for a NEW store only: an existing
    store keeps the tile size recorded in its root attrs.

    Instances pickle as (uri, settings, tile_size) and reconnect in the new process, so
    they can be handed to worker processes.
    """

    def __init__(self, uri: str | os.PathLike, settings: Settings | None = None,
                 tile_size: int | None = None) -> None:
        self.uri = str(uri)
        self.settings = settings if settings is not None else get_settings()
        self._requested_tile = int(tile_size or self.settings.tile_size)
        if self._requested_tile < 1:
            raise ValueError(f"tile_size must be positive, got {self._requested_tile}")
        self.is_s3 = self.uri.startswith("s3://")
        if self.is_s3:
            path = self.uri[len("s3://"):].strip("/")
            if "@" in path.split("/", 1)[0]:
                raise ValueError(
                    "credentials in the store URI are not supported: use AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                )
            if not path:
                raise ValueError(f"{self.uri!r}: an S3 store needs s3://bucket[/prefix]")
            self._root = path
        else:
            local = self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri
            if not local:
                raise ValueError("empty store path")
            self._root = os.path.abspath(os.path.expanduser(local))
        self._zstore = None
        self._fs = None
        self._root_attrs: dict | None = None
        self._known_collections: set[str] = set()
        self._load_root_attrs()

    # -- plumbing ---------------------------------------------------------------------

    def __getstate__(self) -> dict:
        return {"uri": self.uri, "settings": self.settings, "tile_size": self._requested_tile}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["settings"], state["tile_size"])

    def __repr__(self) -> str:
        return f"TileStore({self.uri!r}, tile_size={self.tile_size})"

    @property
    def zarr_store(self):
        """The underlying zarr Store (LocalStore, or FsspecStore over async s3fs)."""
        if self._zstore is None:
            if self.is_s3:
                import s3fs
                from zarr.storage import FsspecStore

                fs = s3fs.S3FileSystem(
                    asynchronous=True, use_listings_cache=False,
                    **self.settings.storage_options(),
                )
                _track_async_fs(fs)
                self._zstore = FsspecStore(fs, path=self._root)
            else:
                from zarr.storage import LocalStore

                self._zstore = LocalStore(self._root)
        return self._zstore

    @property
    def fs(self):
        """A synchronous fsspec filesystem for the non-zarr files (tables, small blobs)."""
        if self._fs is None:
            if self.is_s3:
                import s3fs

                self._fs = s3fs.S3FileSystem(
                    use_listings_cache=False, **self.settings.storage_options()
                )
            else:
                from fsspec.implementations.local import LocalFileSystem

                self._fs = LocalFileSystem()
        return self._fs

    def _full(self, rel: str) -> str:
        """fsspec path of a store-relative path (already normalised)."""
        if self.is_s3:
            return f"{self._root}/{rel}" if rel else self._root
        return os.path.join(self._root, *rel.split("/")) if rel else self._root

    def _open_group(self, path: str = "", mode: str = "r"):
        import zarr

        return zarr.open_group(
            self.zarr_store, path=path, mode=mode, zarr_format=3, use_consolidated=False
        )

    def _open_array(self, collection: str, image_id: str, mode: str = "r"):
        import zarr

        path = f"{collection}/{image_id}/{PIXELS}"
        try:
            return zarr.open_array(self.zarr_store, path=path, mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
            raise KeyError(f"{self.uri}: no image {collection}/{image_id}") from exc

    def _load_root_attrs(self) -> dict | None:
        import zarr

        try:
            g = self._open_group("", "r")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            self._root_attrs = None
            return None
        except OSError:
            raise
        except Exception as exc:
            if is_backend_error(exc):
                # e.g. EndpointConnectionError: not an OSError, but it is one in spirit
                raise ConnectionError(f"cannot reach store {self.uri}: {exc}") from exc
            raise
        attrs = dict(g.attrs)
        if attrs.get("restoreflow_layout") != LAYOUT_VERSION:
            raise ValueError(
                f"{self.uri}: a zarr hierarchy but not a restoreflow store (root attrs "
                f"restoreflow_layout={attrs.get('restoreflow_layout')!r}, "
                f"expected {LAYOUT_VERSION})"
            )
        self._root_attrs = attrs
        return attrs

    def _ensure_root(self) -> None:
        """Create the root group (driver only). Refuses a non-empty non-store location."""
        if self._root_attrs is not None or self._load_root_attrs() is not None:
            return
        if self.fs.exists(self._root):
            if self.is_s3 or os.path.isdir(self._root):
                entries = self.fs.ls(self._root, detail=False)
            else:
                entries = [self._root]
            # another driver may be creating this store right now: its root zarr.json,
            # zarr's temporary file for it and the lock directory are not foreign content
            entries = [e for e in entries if not _STORE_ROOT_ENTRY.match(
                posixpath.basename(str(e).replace("\\", "/").rstrip("/")))]
            if entries and self._load_root_attrs() is None:
                raise ValueError(
                    f"{self.uri} exists and is not a restoreflow store "
                    "(no zarr.json); choose an empty or new location"
                )
            if self._root_attrs is not None:
                return
        import zarr

        attrs = {"restoreflow_layout": LAYOUT_VERSION, "tile_size": self._requested_tile}
        try:
            zarr.open_group(self.zarr_store, mode="a", zarr_format=3, attributes=attrs)
        except zarr.errors.ContainsGroupError:
            pass  # created by a concurrent driver between our check and our write
        self._load_root_attrs()

    def lock(self, what: str, timeout: float | None = None, log=None):
        """Context manager holding the store's writer lock (see
        :mod:`restoreflow.storage.lock`): a driver holds it while it creates images and
        writes tables, so a concurrent run waits for it instead of racing. Creates the
        store if it does not exist yet."""
        from restoreflow.storage.lock import store_lock

        self._ensure_root()
        return store_lock(self, what, timeout, log=log)

    @property
    def exists_store(self) -> bool:
        """True when the root group exists."""
        return self._root_attrs is not None or self._load_root_attrs() is not None

    @property
    def tile_size(self) -> int:
        """Tile edge T: the store's when it exists, else the requested one."""
        if self._root_attrs is not None:
            return int(self._root_attrs["tile_size"])
        return self._requested_tile

    # -- listing ----------------------------------------------------------------------

    def collections(self) -> list[str]:
        """Names of the collections (zarr groups under the root), sorted."""
        if not self.exists_store:
            return []
        with _quiet_listing():
            return sorted(k for k in self._open_group("", "r").group_keys() if k not in _RESERVED)

    def _image_groups(self, collection: str) -> list[tuple[str, Any]]:
        import zarr

        _check_name("collection", collection)
        try:
            g = self._open_group(collection, "r")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            return []
        with _quiet_listing():
            return sorted(g.groups(), key=lambda kv: kv[0])

    def image_ids(self, collection: str, complete_only: bool = True) -> list[str]:
        """Image ids in ``collection`` (sorted); only complete ones unless told otherwise."""
        return [
            name
            for name, grp in self._image_groups(collection)
            if not complete_only or grp.attrs.get("status") == STATUS_COMPLETE
        ]

    def image_attrs(self, collection: str) -> dict[str, dict]:
        """``{image_id: attrs}`` for every image in ``collection`` (any status)."""
        return {name: dict(grp.attrs) for name, grp in self._image_groups(collection)}

    def status(self, collection: str, image_id: str) -> str | None:
        """"writing", "complete", or None when the image does not exist."""
        try:
            return self.attrs(collection, image_id).get("status")
        except KeyError:
            return None

    def has(self, collection: str, image_id: str) -> bool:
        """True when the image exists AND is complete."""
        return self.status(collection, image_id) == STATUS_COMPLETE

    # -- images: metadata (driver) ----------------------------------------------------

    def attrs(self, collection: str, image_id: str) -> dict:
        """The image group's attrs. KeyError when the image does not exist."""
        import zarr

        _check_name("collection", collection)
        _check_name("image id", image_id)
        try:
            return dict(self._open_group(f"{collection}/{image_id}", "r").attrs)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
            raise KeyError(f"{self.uri}: no image {collection}/{image_id}") from exc

    def update_attrs(self, collection: str, image_id: str, attrs: dict | None = None,
                     **more: Any) -> dict:
        """Merge attrs into the image group's attrs (driver only). Returns the new attrs."""
        import zarr

        new = jsonable({**(attrs or {}), **more})
        try:
            g = self._open_group(f"{_check_name('collection', collection)}/"
                                 f"{_check_name('image id', image_id)}", "r+")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
            raise KeyError(f"{self.uri}: no image {collection}/{image_id}") from exc
        g.attrs.update(new)
        return dict(g.attrs)

    def create_image(self, collection: str, image_id: str, shape: Sequence[int], dtype: Any,
                     attrs: dict | None = None, overwrite: bool = False) -> None:
        """Create the image's group and empty ``pixels`` array (metadata only; driver only).

        ``shape`` is (C, H, W), the image's true extent; chunks are (C, T, T). Status is
        set to "writing". ``input`` takes the source dtypes (uint8, uint16, int16, int32,
        float32, float64); derived collections take float32 (normalised units) and inherit
        the input image's attrs (provenance, normalisation) when that exists.
        Raises FileExistsError if the image exists and ``overwrite`` is False.
        """
        import dask.array as da
        import xarray as xr
        import zarr

        _check_name("collection", collection)
        _check_name("image id", image_id)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
        dt = np.dtype(dtype)
        derived = collection != INPUT
        if derived and dt != np.dtype(DERIVED_DTYPE):
            raise ValueError(
                f"derived collection {collection!r} stores float32 normalised values, not {dt}"
            )
        if not derived and dt.name not in SOURCE_DTYPES:
            raise ValueError(f"input dtype {dt} not supported (one of {SOURCE_DTYPES})")
        existing = self.status(collection, image_id)
        if existing is not None and not overwrite:
            raise FileExistsError(
                f"{self.uri}: {collection}/{image_id} exists (status {existing}); "
                "pass overwrite=True to replace it"
            )
        self._ensure_root()
        base: dict = {}
        if derived:
            try:
                base = {k: v for k, v in self.attrs(INPUT, image_id).items()
                        if k not in ("status", "collection_attrs")}
            except KeyError:
                base = {}
        full = {**base, **(attrs or {})}
        full.update(
            image_id=image_id,
            collection=collection,
            values="normalised" if derived else "source",
            status=STATUS_WRITING,
        )
        if derived:
            full.setdefault("collection_attrs", {})
        T = self.tile_size
        c = shape[0]
        if collection not in self._known_collections:
            coll_root = self._open_group("", "r+")
            with _quiet_listing():
                known = set(coll_root.group_keys())
            if collection not in known:
                try:
                    coll_root.create_group(collection, attributes={"collection": collection})
                except zarr.errors.ContainsGroupError:
                    pass  # another driver created it meanwhile: same group, same attrs
            self._known_collections.add(collection)
        encoding: dict = {"chunks": (c, T, T)}
        if dt.kind == "f":
            encoding["fill_value"] = np.nan  # unwritten tiles read as NaN, not as data
        ds = xr.Dataset(
            {PIXELS: (DIMS, da.zeros(shape, chunks=(c, T, T), dtype=dt))},
            attrs=jsonable(full),
        )
        with _quiet_listing():
            ds.to_zarr(
                self.zarr_store, group=f"{collection}/{image_id}", mode="w", compute=False,
                zarr_format=3, consolidated=False, encoding={PIXELS: encoding},
            )

    def mark_complete(self, collection: str, image_id: str, **extra_attrs: Any) -> None:
        """Record ``extra_attrs`` and status "complete" in ONE metadata write (driver only).

        Call only after every tile has been written.
        """
        attrs = {**jsonable(extra_attrs), "status": STATUS_COMPLETE}
        self.update_attrs(collection, image_id, attrs)

    def delete_image(self, collection: str, image_id: str) -> None:
        """Remove the image's group and all its chunks (driver only; not idempotent-safe
        against concurrent writers)."""
        import zarr

        _check_name("image id", image_id)
        try:
            g = self._open_group(_check_name("collection", collection), "r+")
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
            raise KeyError(f"{self.uri}: no collection {collection}") from exc
        with _quiet_listing():
            if image_id not in g.group_keys():
                raise KeyError(f"{self.uri}: no image {collection}/{image_id}")
            del g[image_id]

    # -- pixels -----------------------------------------------------------------------

    def shape(self, collection: str, image_id: str) -> tuple[int, int, int]:
        return tuple(self._open_array(collection, image_id).shape)

    def tiles(self, collection: str, image_id: str) -> list[tuple[int, int, int, int, int, int]]:
        """The chunk grid ``(ty, tx, y0, y1, x0, x1)`` of an image, row-major."""
        _, h, w = self.shape(collection, image_id)
        return tile_grid(h, w, self.tile_size)

    def write_region(self, collection: str, image_id: str, data: np.ndarray, y0: int,
                     x0: int) -> None:
        """Write ``data`` (C, h, w) at (y0, x0). Worker-safe: the region must be chunk-aligned.

        y0 and x0 must be multiples of T, and h (w) a multiple of T or reaching the bottom
        (right) edge, so the write covers whole chunks only and never races another
        writer. Raises ValueError otherwise. Idempotent.
        """
        arr = self._open_array(collection, image_id, "r+")
        self._write(arr, data, y0, x0, f"{collection}/{image_id}")

    def _write(self, arr, data: np.ndarray, y0: int, x0: int, what: str) -> None:
        data = np.asarray(data)
        c, h, w = arr.shape
        T = self.tile_size
        if data.ndim != 3 or data.shape[0] != c:
            raise ValueError(f"{what}: region must be ({c}, h, w), got {data.shape}")
        rh, rw = data.shape[1:]
        y0, x0 = int(y0), int(x0)
        if y0 < 0 or x0 < 0 or y0 % T or x0 % T:
            raise ValueError(f"{what}: region origin ({y0}, {x0}) is not a multiple of T={T}")
        y1, x1 = y0 + rh, x0 + rw
        if rh < 1 or rw < 1 or y1 > h or x1 > w:
            raise ValueError(f"{what}: region [{y0}:{y1}, {x0}:{x1}] outside image {h}x{w}")
        if (rh % T and y1 != h) or (rw % T and x1 != w):
            raise ValueError(
                f"{what}: region {rh}x{rw} at ({y0}, {x0}) is not chunk-aligned "
                f"(sides must be multiples of T={T} or reach the edge of {h}x{w})"
            )
        if not np.can_cast(data.dtype, arr.dtype, casting="same_kind"):
            raise ValueError(f"{what}: cannot store {data.dtype} data in a {arr.dtype} array")
        arr[:, y0:y1, x0:x1] = data.astype(arr.dtype, copy=False)

    def write_image(self, collection: str, image_id: str, array: np.ndarray) -> None:
        """Write the whole (C, H, W) array: one region covering every chunk exactly once."""
        arr = self._open_array(collection, image_id, "r+")
        array = np.asarray(array)
        if array.shape != arr.shape:
            raise ValueError(
                f"{collection}/{image_id}: array shape {array.shape} != stored {arr.shape}"
            )
        self._write(arr, array, 0, 0, f"{collection}/{image_id}")

    def read(self, collection: str, image_id: str, normalised: bool = False) -> np.ndarray:
        """The whole image (C, H, W).

        ``normalised=False``: the stored values (source dtype for ``input``, float32
        normalised for derived collections). ``normalised=True``: float32 in normalised
        units, ``(raw - norm_offset) / norm_scale`` for ``input``.
        """
        arr = self._open_array(collection, image_id)
        data = arr[...]
        return self._maybe_normalise(collection, image_id, data, normalised)

    def read_region(self, collection: str, image_id: str, y0: int, y1: int, x0: int, x1: int,
                    normalised: bool = False) -> np.ndarray:
        """Pixels [:, y0:y1, x0:x1] (any region, not necessarily aligned)."""
        arr = self._open_array(collection, image_id)
        _, h, w = arr.shape
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"region [{y0}:{y1}, {x0}:{x1}] outside image {h}x{w}")
        data = arr[:, y0:y1, x0:x1]
        return self._maybe_normalise(collection, image_id, data, normalised)

    def _maybe_normalise(self, collection: str, image_id: str, data: np.ndarray,
                         normalised: bool) -> np.ndarray:
        if not normalised:
            return data
        if collection != INPUT:
            return data.astype(np.float32, copy=False)
        a = self.attrs(collection, image_id)
        return to_normalised(data, float(a["norm_offset"]), float(a["norm_scale"]))

    def open_dataset(self, collection: str, image_id: str):
        """The image as a lazy ``xarray.Dataset`` (variable ``pixels``, attrs = image attrs)."""
        import xarray as xr

        _check_name("collection", collection)
        _check_name("image id", image_id)
        return xr.open_zarr(self.zarr_store, group=f"{collection}/{image_id}",
                            consolidated=False)

    # -- tables and small files (driver) ----------------------------------------------

    @staticmethod
    def _rel(path: str) -> str:
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

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a small file under the store root atomically (temp+rename locally, with
        the permissions of a normal write; one PUT on S3)."""
        rel = self._rel(path)
        full = self._full(rel)
        if self.is_s3:
            self.fs.pipe_file(full, bytes(data))
            return
        from restoreflow.storage.writers import write_atomic

        os.makedirs(os.path.dirname(full), exist_ok=True)
        write_atomic(full, bytes(data))  # a normal file's permissions (0o666 & ~umask)

    def get_bytes(self, path: str) -> bytes:
        """Read a small file under the store root (FileNotFoundError if missing)."""
        full = self._full(self._rel(path))
        if self.is_s3:
            return self.fs.cat_file(full)
        with open(full, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        full = self._full(self._rel(path))
        if self.is_s3:
            self.fs.invalidate_cache()
        return bool(self.fs.exists(full))

    def list_files(self, prefix: str) -> list[str]:
        """Store-relative paths of the files under ``prefix`` (recursive, sorted)."""
        rel = self._rel(prefix)
        full = self._full(rel)
        if self.is_s3:
            self.fs.invalidate_cache()
        if not self.fs.exists(full):
            return []
        found = self.fs.find(full)
        base = self._full("")
        out = []
        for p in found:
            p = p[len(base):].lstrip("/\\").replace("\\", "/")
            out.append(p)
        return sorted(out)

    def _table_path(self, name: str) -> str:
        if not _TABLE_RE.match(name or ""):
            raise ValueError(f"invalid table name {name!r}: use [A-Za-z0-9_-]")
        return f"{TABLES_DIR}/{name}.json"

    def read_table(self, name: str) -> list[dict]:
        """Rows of ``tables/<name>.json``; [] when the table does not exist."""
        try:
            raw = self.get_bytes(self._table_path(name))
        except FileNotFoundError:
            return []
        rows = json.loads(raw)
        if not isinstance(rows, list):
            raise ValueError(f"{self.uri}: table {name} is not a JSON list")
        return rows

    def write_table(self, name: str, rows: Iterable[dict]) -> None:
        """Replace ``tables/<name>.json`` atomically (driver only)."""
        rows = [jsonable(dict(r)) for r in rows]
        self._ensure_root()
        data = json.dumps(rows, indent=1, sort_keys=True, allow_nan=False).encode()
        self.put_bytes(self._table_path(name), data)

    def upsert_row(self, name: str, row: dict, key: Sequence[str]) -> None:
        """Replace the row whose ``key`` columns equal ``row``'s (in place), or append it
        (driver only: read-modify-write)."""
        row = jsonable(dict(row))
        want = [row.get(c) for c in key]
        rows = self.read_table(name)
        at = [i for i, r in enumerate(rows) if [r.get(c) for c in key] == want]
        if at:
            rows[at[0]] = row
        else:
            rows.append(row)
        self.write_table(name, rows)

    def append_rows(self, name: str, rows: Iterable[dict], key: Sequence[str] = ()) -> int:
        """Append rows, skipping any whose ``key`` columns equal an existing row's.

        With an empty ``key`` every row is appended. Writes nothing when no row is new.
        Returns the number of rows added (driver only: read-modify-write).
        """
        existing = self.read_table(name)
        key = tuple(key)

        def k(r: dict) -> tuple:
            return tuple(json.dumps(jsonable(r.get(c)), sort_keys=True) for c in key)

        seen = {k(r) for r in existing} if key else set()
        added = []
        for r in rows:
            r = jsonable(dict(r))
            if key:
                kk = k(r)
                if kk in seen:
                    continue
                seen.add(kk)
            added.append(r)
        if added:
            self.write_table(name, existing + added)
        return len(added)
