"""The tile store: a zarr v3 hierarchy on a local disk or S3, one class over fsspec.

The layout (root attrs, a group per collection and per image, ``pixels`` chunked one tile
per chunk, ``tables/``) is named in :mod:`restoreflow.storage.layout`; small files and
tables are :mod:`~restoreflow.storage.files` and :mod:`~restoreflow.storage.tables`.

Concurrency contract (pangeo-forge style): only the driver process creates images and
changes metadata (:meth:`TileStore.create_image`, :meth:`TileStore.mark_complete`,
tables); workers only call :meth:`TileStore.write_region` with chunk-aligned regions, so
no two writers ever touch the same object. Region writes are idempotent (writing the
same tile twice stores the same bytes); :meth:`TileStore.create_image` with
``overwrite=True`` and :meth:`TileStore.delete_image` are not.

Pixel values: collection ``input`` holds the source values in their native dtype.
Every other (derived) collection holds float32 in normalised units
(:mod:`restoreflow.storage.values`).
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from restoreflow.settings import Settings, get_settings
from restoreflow.storage import files, tables
from restoreflow.storage.backend import is_backend_error, open_filesystem, open_zarr_store
from restoreflow.storage.grid import tile_grid, write_aligned
from restoreflow.storage.layout import (
    DERIVED_DTYPE,
    DIMS,
    INPUT,
    LAYOUT_VERSION,
    PIXELS,
    RESERVED,
    SOURCE_DTYPES,
    STATUS_COMPLETE,
    STATUS_WRITING,
    check_name,
)
from restoreflow.storage.tables import jsonable
from restoreflow.storage.values import to_normalised

# what a store's root holds while a driver creates it (see TileStore._ensure_root)
STORE_ROOT_ENTRY = re.compile(r"^(zarr\.json|zarr\.[0-9a-f]{32}\.partial|\.locks)$")


@contextmanager
def _quiet_listing():
    """Silence zarr's warning about non-zarr entries met while listing (our tables/ and
    blobs, and the empty directories some S3 servers keep after deletes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        yield


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
            self._zstore = open_zarr_store(self._root, self.is_s3, self.settings)
        return self._zstore

    @property
    def fs(self):
        """A synchronous fsspec filesystem for the non-zarr files (tables, small blobs)."""
        if self._fs is None:
            self._fs = open_filesystem(self.is_s3, self.settings)
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
            entries = [e for e in entries if not STORE_ROOT_ENTRY.match(
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
            return sorted(k for k in self._open_group("", "r").group_keys() if k not in RESERVED)

    def _image_groups(self, collection: str) -> list[tuple[str, Any]]:
        import zarr

        check_name("collection", collection)
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

    def listed_ids(self, collection: str) -> set[str]:
        """:func:`restoreflow.storage.files.listed_ids` on this store."""
        return files.listed_ids(self, collection)

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

        check_name("collection", collection)
        check_name("image id", image_id)
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
            g = self._open_group(f"{check_name('collection', collection)}/"
                                 f"{check_name('image id', image_id)}", "r+")
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

        check_name("collection", collection)
        check_name("image id", image_id)
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

        check_name("image id", image_id)
        try:
            g = self._open_group(check_name("collection", collection), "r+")
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
        write_aligned(arr, data, y0, x0, f"{collection}/{image_id}", self.tile_size)

    def write_image(self, collection: str, image_id: str, array: np.ndarray) -> None:
        """Write the whole (C, H, W) array: one region covering every chunk exactly once."""
        arr = self._open_array(collection, image_id, "r+")
        array = np.asarray(array)
        if array.shape != arr.shape:
            raise ValueError(
                f"{collection}/{image_id}: array shape {array.shape} != stored {arr.shape}"
            )
        write_aligned(arr, array, 0, 0, f"{collection}/{image_id}", self.tile_size)

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

        check_name("collection", collection)
        check_name("image id", image_id)
        return xr.open_zarr(self.zarr_store, group=f"{collection}/{image_id}",
                            consolidated=False)

    # -- small files and tables (driver): storage/files.py, storage/tables.py ---------

    def put_bytes(self, path: str, data: bytes) -> None:
        """:func:`restoreflow.storage.files.put_bytes` on this store."""
        files.put_bytes(self, path, data)

    def get_bytes(self, path: str) -> bytes:
        """:func:`restoreflow.storage.files.get_bytes` on this store."""
        return files.get_bytes(self, path)

    def exists(self, path: str) -> bool:
        """:func:`restoreflow.storage.files.exists` on this store."""
        return files.exists(self, path)

    def list_files(self, prefix: str) -> list[str]:
        """:func:`restoreflow.storage.files.list_files` on this store."""
        return files.list_files(self, prefix)

    def read_table(self, name: str) -> list[dict]:
        """:func:`restoreflow.storage.tables.read_table` on this store."""
        return tables.read_table(self, name)

    def write_table(self, name: str, rows: Iterable[dict]) -> None:
        """:func:`restoreflow.storage.tables.write_table` on this store."""
        tables.write_table(self, name, rows)

    def upsert_row(self, name: str, row: dict, key: Sequence[str]) -> None:
        """:func:`restoreflow.storage.tables.upsert_row` on this store."""
        tables.upsert_row(self, name, row, key)

    def append_rows(self, name: str, rows: Iterable[dict], key: Sequence[str] = ()) -> int:
        """:func:`restoreflow.storage.tables.append_rows` on this store."""
        return tables.append_rows(self, name, rows, key)
