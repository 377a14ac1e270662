"""`make bench`: every benchmark in one go; results in benchmarks/results/ (JSON + md).

Each benchmark is also runnable alone: python -m benchmarks.<name> --help.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ["benchmarks.bench_prior"],
    ["benchmarks.bench_operators"],
    ["benchmarks.bench_samplers"],
    ["benchmarks.bench_adapt"],
    ["benchmarks.bench_conformal"],
    ["benchmarks.bench_pipeline"],
]


def main() -> None:
    failed = []
    for b in BENCHES:
        print(f"== {' '.join(b)}", flush=True)
        if subprocess.call([sys.executable, "-m", *b]) != 0:
            failed.append(b[0])
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
