"""Names of the store's collections and tables, in one place.

``input`` holds what was ingested (sources, calibration and corpus images); ``degraded``
the simulated measurements y; ``restored`` the restorations (with
``restored.samples_lower`` / ``restored.samples_upper`` for posterior-sample quantiles);
``interval_lower`` / ``interval_upper`` the calibrated per-pixel intervals.
"""

INPUT, DEGRADED, RESTORED = "input", "degraded", "restored"
INTERVAL_LO, INTERVAL_HI = "interval_lower", "interval_upper"

# tables (storage/store.py: ``tables/<name>.json``)
RUNS_TABLE, QUALITY_TABLE, REJECTED_TABLE = "runs", "quality", "rejected"
