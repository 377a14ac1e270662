"""Names and rules of the store's layout, in one place (docs/store-layout.md has it in full)::

    <store>/zarr.json                      root group, attrs {"restoreflow_layout": 1,
                                                                  "tile_size": T}
    <store>/<collection>/zarr.json         one group per collection (input, degraded, ...)
    <store>/<collection>/<image_id>/       one group per image, attrs = provenance + status
        pixels                             array dims ("band", "y", "x"), shape (C, H, W),
                                           chunks (C, T, T): one tile per chunk
    <store>/tables/<name>.json             small JSON tables (list of row dicts)

``input`` holds what was ingested (sources, calibration and corpus images); ``degraded``
the simulated measurements y; ``restored`` the restorations (with
``restored.samples_lower`` / ``restored.samples_upper`` for posterior-sample quantiles);
``interval_lower`` / ``interval_upper`` the calibrated per-pixel intervals. An image's
``status`` is "writing" until every tile is written, then "complete".
"""

import re

INPUT, DEGRADED, RESTORED = "input", "degraded", "restored"
INTERVAL_LO, INTERVAL_HI = "interval_lower", "interval_upper"

# tables (storage/tables.py: ``tables/<name>.json``)
RUNS_TABLE, QUALITY_TABLE, REJECTED_TABLE = "runs", "quality", "rejected"

LAYOUT_VERSION = 1

PIXELS = "pixels"
DIMS = ("band", "y", "x")
TABLES_DIR = "tables"
SOURCE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
DERIVED_DTYPE = "float32"
STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED = {TABLES_DIR, "zarr.json"}


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in RESERVED:
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-128 characters [A-Za-z0-9._-], "
            f"starting with a letter or digit, not {sorted(RESERVED)}"
        )
    return name
