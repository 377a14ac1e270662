"""The store's small JSON tables, ``tables/<name>.json`` (a list of row dicts each): read
them; replace, upsert and append with de-duplication by key columns (driver only:
read-modify-write); and :func:`jsonable`, the strict-JSON form that table rows and image
attrs are written in.

Functions of a :class:`~restoreflow.storage.store.TileStore`; its methods of the same
names call them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from restoreflow.storage.layout import TABLES_DIR

_TABLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


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


def table_path(name: str) -> str:
    if not _TABLE_RE.match(name or ""):
        raise ValueError(f"invalid table name {name!r}: use [A-Za-z0-9_-]")
    return f"{TABLES_DIR}/{name}.json"


def read_table(store, name: str) -> list[dict]:
    """Rows of ``tables/<name>.json``; [] when the table does not exist."""
    try:
        raw = store.get_bytes(table_path(name))
    except FileNotFoundError:
        return []
    rows = json.loads(raw)
    if not isinstance(rows, list):
        raise ValueError(f"{store.uri}: table {name} is not a JSON list")
    return rows


def write_table(store, name: str, rows: Iterable[dict]) -> None:
    """Replace ``tables/<name>.json`` atomically (driver only)."""
    rows = [jsonable(dict(r)) for r in rows]
    store._ensure_root()
    data = json.dumps(rows, indent=1, sort_keys=True, allow_nan=False).encode()
    store.put_bytes(table_path(name), data)


def upsert_row(store, name: str, row: dict, key: Sequence[str]) -> None:
    """Replace the row whose ``key`` columns equal ``row``'s (in place), or append it
    (driver only: read-modify-write)."""
    row = jsonable(dict(row))
    want = [row.get(c) for c in key]
    rows = store.read_table(name)
    at = [i for i, r in enumerate(rows) if [r.get(c) for c in key] == want]
    if at:
        rows[at[0]] = row
    else:
        rows.append(row)
    store.write_table(name, rows)


def append_rows(store, name: str, rows: Iterable[dict], key: Sequence[str] = ()) -> int:
    """Append rows, skipping any whose ``key`` columns equal an existing row's.

    With an empty ``key`` every row is appended. Writes nothing when no row is new.
    Returns the number of rows added (driver only: read-modify-write).
    """
    existing = store.read_table(name)
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
        store.write_table(name, existing + added)
    return len(added)
