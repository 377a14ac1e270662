"""Start-up of a flow verb (issue 30): ``restoreflow simulate`` of one small image, timed
to its first line of output and to its end, as a new user runs it (no Prefect server,
the private per-process Prefect database).

Three conditions, alternated over ``--repeats`` runs in one session (the machine is
noisy): ``template`` (the default: the verb starts its private Prefect server at once, in
the background, and the private database starts from the migrated copy the CLI caches
once per machine and Prefect version); ``late server`` (the same app invoked without
``restoreflow.cli.main``, so Prefect starts its ephemeral server itself at the first
flow call, as every verb did before); and ``fresh`` (no cached copy can be made:
``XDG_CACHE_HOME`` points where nothing can be written, so the server migrates a new
database).

    python -m benchmarks.bench_startup [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

EXE = os.path.join(os.path.dirname(sys.executable), "restoreflow")
CONDITIONS = ("template", "late server", "fresh")


#: the app without restoreflow.cli.main: Prefect starts its server at the first flow call
LATE_SERVER = [sys.executable, "-c", "import sys; from restoreflow.cli import app; "
               "sys.argv[0] = 'restoreflow'; app()"]


def _timed_verb(args: list[str], env: dict, cwd: str, cmd: list[str] | None = None) -> dict:
    """Seconds to the first line (stdout or stderr) and to the end of one verb."""
    t0 = time.perf_counter()
    p = subprocess.Popen([*(cmd or [EXE]), *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    first, lines = None, []
    for line in p.stdout:
        if first is None and line.strip():
            first = time.perf_counter() - t0
        lines.append(line.rstrip())
    rc = p.wait()
    total = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{args}: exit {rc}: {lines[-5:]}")
    return {"first_line_s": first, "total_s": total, "first": lines[0] if lines else ""}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="startup")
    args = ap.parse_args(argv)
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
                    ).save(work / "a.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RESTOREFLOW_"))}
    env["HOME"] = str(work / "home")  # a new user: no ~/.prefect, no cache yet
    subprocess.run([EXE, "ingest", "a.png", "--store", "st"], env=env, cwd=work, check=True,
                   capture_output=True)
    rows = []
    # the first template run makes the cached copy (once per machine): timed apart
    made = _timed_verb(["simulate", "-d", "gaussian_noise(sigma=0.01)", "--store", "st",
                        "--collection", "warm"], env, str(work))
    print(f"first verb (makes the cached database): {made['total_s']:.1f} s", flush=True)
    for r in range(args.repeats):
        for cond in CONDITIONS:
            e = dict(env) if cond != "fresh" else {**env, "XDG_CACHE_HOME": "/proc/none"}
            res = _timed_verb(["simulate", "-d", f"gaussian_noise(sigma=0.0{r + 2})",
                               "--store", "st", "--collection", f"{cond[0]}{r}"], e, str(work),
                              LATE_SERVER if cond == "late server" else None)
            rows.append({"condition": cond, "repeat": r, **res})
            print(f"{cond:11s} first line {res['first_line_s']:5.1f} s, total "
                  f"{res['total_s']:5.1f} s", flush=True)
    summary = {c: {k: statistics.median(x[k] for x in rows if x["condition"] == c)
                   for k in ("first_line_s", "total_s")} for c in CONDITIONS}
    md = ["# Start-up of a flow verb", "",
          "`restoreflow simulate` of one 64 px image into a new collection, as a new user "
          "(no Prefect server, a new HOME), run as a subprocess; medians of "
          f"{args.repeats} runs per condition, alternated in one session.", "",
          "| condition | first line (s) | total (s) |", "|---|---|---|"]
    for c, v in summary.items():
        md.append(f"| {c} | {v['first_line_s']:.1f} | {v['total_s']:.1f} |")
    md += ["", f"The first verb on a machine makes the cached database: {made['total_s']:.1f} s.",
           "", f"First line printed: `{rows[0]['first']}`"]
    write_results(args.name, {"rows": rows, "summary": summary, "first_verb": made},
                  "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
