"""Orchestration overhead, Dask scaling, local vs S3, and memory of tiled restoration.

1. Overhead: the same N images (ingest + simulate + restore + metrics + export) run (a) by
   a plain script calling the core functions in one fresh process and (b) by the pipeline
   flow (`restoreflow run`) on a one-worker local Dask cluster, also a fresh process.
   overhead = flow wall / script wall - 1; the Prefect + cluster start-up is timed
   separately (a run with no images) and reported both ways. Bar: <= 5% at N >= 20.
2. Scale: the pipeline flow with 1 and with 2 local workers on the same images:
   throughput ratio. Bar: >= 1.7x on 2 cores.
3. Storage: the pipeline flow on a local store vs a SeaweedFS S3 store (started here on
   127.0.0.1): end-to-end time ratio.
4. Memory: peak RSS of a worker's restore task on one S x S RGB image (a fresh process;
   ``--steps-mem`` sampler steps), for several sizes; the memory beyond the image-sized
   tensors should not grow with S. ``--memory-only`` runs just this (bar: 8192 px under
   4 GiB).

    python -m benchmarks.bench_pipeline [--quick] [--n 20] [--size 256] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

SPEC = "gaussian_blur(sigma=2)+gaussian_noise(sigma=0.03)"


def _images(d: Path, n: int, size: int) -> str:
    from PIL import Image

    from restoreflow.models import corpus

    d.mkdir(parents=True, exist_ok=True)
    photos = corpus.held_out_photos()
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = im.size
        s = int(rng.integers(min(w, h) // 3, min(w, h)))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        im.crop((x, y, x + s, y + s)).resize((size, size)).save(d / f"b{i:03d}.png")
    return str(d)


def _spec(src: str, store: str, steps: int, out: str) -> dict:
    return {"name": "bench", "sources": [src], "store": store, "degradation": SPEC,
            "restore": {"steps": steps}, "export": {"format": "png", "out": out},
            "report": None}


CORE = """
import sys, time
t0 = time.perf_counter()
from restoreflow.stages import calibrate
from restoreflow.stages import config
from restoreflow.stages import restore as restore_stage
from restoreflow.storage import layout
from restoreflow.stages.simulate import simulate_image
from restoreflow.degradation import DegradationSpec
from restoreflow.spec import RunSpec
from restoreflow.storage.export import export
from restoreflow.storage.ingest import ingest
from restoreflow.storage.store import TileStore
import yaml

run = RunSpec.from_dict(yaml.safe_load(open(sys.argv[1])))
store = TileStore(run.store)
cfg = config.RestoreConfig.from_run(run)
spec = DegradationSpec.parse(run.degradation)
rep = ingest(run.sources, store, progress=False)
ids = [r.image_id for r in rep.rows if r.image_id]
for i in ids:
    simulate_image(store, i, spec, run.seed)
    restore_stage.restore_one(store, i, cfg, layout.DEGRADED)
    calibrate.truth_metrics(store, i)
export(store, "restored", "png", run.export.out, ids)
print(time.perf_counter() - t0)
"""


def core_time(spec: dict) -> float:
    """The same work as a plain script: the core functions in one fresh process, no
    Prefect, no Dask; wall time from process start (imports and model load included, as
    they are in each worker of the flow)."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "spec.yaml"
        p.write_text(yaml.safe_dump(spec))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", CORE, str(p)], capture_output=True,
                           text=True)
        wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return wall


def flow_time(spec: dict, workers: int, env_extra: dict | None = None) -> dict:
    """Wall time of `restoreflow run` in a fresh process (includes cluster start-up)."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "spec.yaml"
        p.write_text(yaml.safe_dump(spec))
        env = {**os.environ, "RESTOREFLOW_DASK_WORKERS": str(workers), **(env_extra or {})}
        exe = Path(sys.executable).parent / "restoreflow"
        t = time.perf_counter()
        r = subprocess.run([str(exe), "run", str(p)], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return {"wall_s": wall}


def startup_time(work: Path, workers: int) -> float:
    """A run with zero images: Prefect + Dask cluster start-up and teardown."""
    empty = work / f"empty{workers}"
    empty.mkdir(exist_ok=True)
    (empty / "note.txt").write_text("no images")
    spec = _spec(str(empty / "*.png"), str(work / f"empty-store{workers}"), 1, str(work / "e"))
    spec["export"] = None
    return flow_time(spec, workers)["wall_s"]


MEM_PREP = """
import resource, sys
import numpy as np
from PIL import Image
from restoreflow import samples
from restoreflow.stages.simulate import simulate_image
from restoreflow.degradation import DegradationSpec
from restoreflow.storage.ingest import ingest
from restoreflow.storage.store import TileStore
size, work = int(sys.argv[1]), sys.argv[2]
Image.MAX_IMAGE_PIXELS = None
im = Image.open(samples.sample_paths(samples.HELD_OUT)[0]).convert("RGB").resize((size, size))
im.save(f"{work}/big.png", compress_level=1)
del im
store = TileStore(f"{work}/store")
rep = ingest([f"{work}/big.png"], store, progress=False)
image_id = [r.image_id for r in rep.rows if r.image_id][0]
simulate_image(store, image_id, DegradationSpec.parse(sys.argv[3]), 0)
print(image_id, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

MEM_RESTORE = """
import resource, sys
from restoreflow.stages.config import RestoreConfig
from restoreflow.stages.restore import restore_one
from restoreflow.storage.layout import DEGRADED
from restoreflow.spec import RunSpec
from restoreflow.storage.store import TileStore
work, image_id, spec, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
run = RunSpec.from_dict({"name": "mem", "sources": [work], "store": f"{work}/store",
                         "degradation": spec, "restore": {"steps": steps}, "report": None})
restore_one(TileStore(run.store), image_id, RestoreConfig.from_run(run), DEGRADED)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _py(code: str, *args) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return r.stdout.strip().splitlines()[-1].split()


def peak_rss_mb(size: int, steps: int) -> dict:
    """Peak RSS of a worker's restore task on one S x S RGB image: the image is ingested
    and degraded in one process, then a fresh process (a worker) runs the restore task
    (`pipeline.restore_one`: read y from the store, tiled DDPG with the run spec's
    defaults, write the result, compute the quality features) and reports its peak."""
    with tempfile.TemporaryDirectory() as tmp:
        image_id, prep = _py(MEM_PREP, size, tmp, SPEC)
        t = time.perf_counter()
        (restore,) = _py(MEM_RESTORE, tmp, image_id, SPEC, steps)
        return {"restore_mb": float(restore), "ingest_simulate_mb": float(prep),
                "restore_wall_s": time.perf_counter() - t}


def memory_only(sizes: list[int], steps: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = {"spec": SPEC, "steps": steps, "sizes": {}}
    md = [f"Peak RSS of one worker's restore task (`pipeline.restore_one`, fresh process:"
          f" read y, tiled DDPG {steps} step(s) with the run spec's defaults (tile 256,"
          f" overlap 64, tile batch 4), write, quality features) on an S x S RGB image"
          f" degraded by `{SPEC}`.", "",
          "| S | restore task peak RSS (MiB) | one 3 x S x S float32 tensor (MiB) |"
          " ingest + simulate process (MiB) | restore wall (s) |", "|---|---|---|---|---|"]
    for size in sizes:
        r = peak_rss_mb(size, steps)
        res["sizes"][size] = {**r, "image_tensor_mb": 3 * size * size * 4 / 2**20}
        md.append(f"| {size} | {r['restore_mb']:.0f} | {3 * size * size * 4 / 2**20:.0f} | "
                  f"{r['ingest_simulate_mb']:.0f} | {r['restore_wall_s']:.0f} |")
        print(md[-1], flush=True)
    print(write_results("memory_tiled", res, "\n".join(md)).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--mem-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--steps-mem", type=int, default=1)
    ap.add_argument("--skip", nargs="*", default=[], choices=["scale", "s3", "memory"])
    ap.add_argument("--memory-only", action="store_true",
                    help="only the peak-RSS measurement (results: memory_tiled)")
    args = ap.parse_args()
    if args.memory_only:
        return memory_only(args.mem_sizes, args.steps_mem)
    if args.quick:
        args.n, args.size, args.steps, args.mem_sizes = 4, 64, 3, [256, 512]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res: dict = {"n": args.n, "size": args.size, "steps": args.steps, "spec": SPEC}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = _images(work / "src", args.n, args.size)
        res["core_s"] = core_time(_spec(src, str(work / "s0"), args.steps, str(work / "o0")))
        res["startup_1w_s"] = startup_time(work, 1)
        one = flow_time(_spec(src, str(work / "s1"), args.steps, str(work / "o1")), 1)
        res["flow_1w_s"] = one["wall_s"]
        res["overhead"] = res["flow_1w_s"] / res["core_s"] - 1
        res["overhead_excl_startup"] = (res["flow_1w_s"] - res["startup_1w_s"]) / res["core_s"] - 1
        print(json.dumps(res), flush=True)
        if "scale" not in args.skip:
            two = flow_time(_spec(src, str(work / "s2"), args.steps, str(work / "o2")), 2)
            res["flow_2w_s"] = two["wall_s"]
            res["startup_2w_s"] = startup_time(work, 2)
            res["speedup_2w"] = res["flow_1w_s"] / res["flow_2w_s"]
            res["speedup_2w_excl_startup"] = ((res["flow_1w_s"] - res["startup_1w_s"])
                                              / (res["flow_2w_s"] - res["startup_2w_s"]))
        if "s3" not in args.skip:
            from restoreflow.storage.s3server import random_credentials, seaweedfs_server

            key, secret = random_credentials()
            with seaweedfs_server(work / "weed", key, secret) as srv:
                s3 = flow_time(_spec(src, f"s3://{srv.bucket}/bench", args.steps,
                                     str(work / "o3")), 1, srv.env())
            res["flow_s3_1w_s"] = s3["wall_s"]
            res["s3_over_local"] = s3["wall_s"] / res["flow_1w_s"]
        if "memory" not in args.skip:
            res["peak_rss_mb"] = {s: peak_rss_mb(s, args.steps_mem) for s in args.mem_sizes}
            res["image_tensor_mb"] = {s: 3 * s * s * 4 / 2**20 for s in args.mem_sizes}
    md = [f"{args.n} images of {args.size}x{args.size}, `{SPEC}`, DDPG {args.steps} steps.", "",
          "| figure | value |", "|---|---|",
          f"| plain script, core functions, one process (s) | {res['core_s']:.1f} |",
          f"| pipeline flow, 1 local Dask worker (s) | {res['flow_1w_s']:.1f} |",
          f"| of which Prefect + cluster start-up (s) | {res['startup_1w_s']:.1f} |",
          f"| overhead (incl. / excl. start-up) | {res['overhead']:+.1%} / "
          f"{res['overhead_excl_startup']:+.1%} (bar <= 5%) |"]
    if "speedup_2w" in res:
        md.append(f"| 2 workers vs 1 (incl. / excl. start-up) | {res['speedup_2w']:.2f}x / "
                  f"{res['speedup_2w_excl_startup']:.2f}x (bar >= 1.7x) |")
    if "s3_over_local" in res:
        md.append(f"| SeaweedFS S3 / local store, end to end | {res['s3_over_local']:.2f} |")
    for s, r in res.get("peak_rss_mb", {}).items():
        md.append(f"| peak RSS of the restore task, {s}x{s} RGB ({args.steps_mem} step) (MiB) | "
                  f"{r['restore_mb']:.0f} (one image tensor: {res['image_tensor_mb'][s]:.0f}) |")
    name = "pipeline_quick" if args.quick else "pipeline"
    print(write_results(name, res, "\n".join(md)).read_text())


if __name__ == "__main__":
    main()
