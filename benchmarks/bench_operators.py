"""Time to degrade a 4096x4096 RGB image with each operator (one run, one machine).

Two figures per degradation: ``simulate_s`` is restoreflow.stages.simulate.simulate_image on a
local store (read input tiles with halo, A, noise, write tiles; tiled where the operator
allows it, whole image for SR), ``A_s`` is the operator alone on the in-memory image.

    python -m benchmarks.bench_operators [--size 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import write_results

SPECS = [
    "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
    "gaussian_blur(sigma=3,boundary=reflect)+gaussian_noise(sigma=0.05)",
    "uniform_blur(size=9)+gaussian_noise(sigma=0.05)",
    "motion_blur(length=21)+gaussian_noise(sigma=0.05)",
    "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
    "sr(factor=4,kernel=box)+gaussian_noise(sigma=0.01)",
    "inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)",
    "inpaint_boxes(count=4,size=512)",
    "denoise+poisson_gaussian_noise(photons=100,sigma=0.01)",
    "colorise+gaussian_noise(sigma=0.01)",
]


def main() -> None:
    from restoreflow.degradation import DegradationSpec, make_generator
    from restoreflow.stages.simulate import simulate_image
    from restoreflow.storage.ingest import ingest_array
    from restoreflow.storage.store import TileStore

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    img = (rng.random((n // 8, n // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = TileStore(f"{tmp}/store", tile_size=256)
        iid = ingest_array(store, img, "bench.png")
        x = torch.from_numpy(store.read("input", iid, normalised=True))[None]
        for k, text in enumerate(SPECS):
            spec = DegradationSpec.parse(text)
            t = time.perf_counter()
            res = simulate_image(store, iid, spec, seed=0, collection=f"d{k}")
            sim = time.perf_counter() - t
            deg = spec.build((3, n, n), generator=make_generator(spec, 0, iid))
            t = time.perf_counter()
            with torch.no_grad():
                deg.operator.A(x)
            a_s = time.perf_counter() - t
            rows.append({"spec": spec.text, "operator": type(deg.operator).__name__,
                         "closed_form_dagger": bool(deg.operator.closed_form_dagger),
                         "mode": res.mode, "simulate_s": round(sim, 2), "A_s": round(a_s, 2)})
            print(rows[-1], flush=True)
    md = [f"Degrading one {n}x{n} RGB image (float32). `simulate` = read + A + noise + "
          "write on a local store; `A` = operator only, in memory.", "",
          "| degradation | operator | A^+ closed form | simulate mode | simulate (s) | A (s) |",
          "|---|---|---|---|---|---|"]
    md += [f"| `{r['spec']}` | {r['operator']} | {r['closed_form_dagger']} | {r['mode']} | "
           f"{r['simulate_s']} | {r['A_s']} |" for r in rows]
    print(write_results("operators_4096", {"size": n, "rows": rows}, "\n".join(md)).read_text())


if __name__ == "__main__":
    main()
