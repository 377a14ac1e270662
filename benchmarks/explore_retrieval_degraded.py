"""Exploration (issue 16): do degraded queries find neighbours of their own domain when
the reference index is degraded the same way?

Data as ``bench_adapt`` (seed 0, 128 px centre crops): test = 8 astronomy images and 8
held-out photos; corpus = 150 other astronomy images + the prior's training photos, one
index. For each task (``bench_adapt.TASKS``) and test image, the K = 8 nearest corpus
images (EfficientNet-Lite0, cosine) for:

    clean index       the prepared query (``prepare_query(y, A, sigma_y)``) against the
                      corpus images as they are (what the pipeline does today)
    matched index     the same query against the corpus images degraded by the same
                      operator and noise level (own seed per image) and prepared the same
                      way: like is compared with like

Reports the same-class rate (fraction of the K neighbours from the query's domain) and,
for 20 degraded corpus images whose clean source is in the index, top-1/top-5 of the
true source (the known-source check of bench_adapt).

    OMP_NUM_THREADS=1 python -m benchmarks.explore_retrieval_degraded
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.bench_adapt import TASKS, degrade, load_data
from benchmarks.common import write_results
from restoreflow.models.embedders import embed_images, get_embedder
from restoreflow.retrieval.index import ReferenceIndex, prepare_query, retrieval_accuracy

K = 8
N_KNOWN = 20


def prepared(task: str, x: torch.Tensor, key: str) -> torch.Tensor:
    _, deg, y = degrade(task, x, key, 0)
    return prepare_query(y, deg.operator, deg.sigma_y)


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    test, refs = load_data(8, 150, 128, 256, 0)
    dom = {r["key"]: r["domain"] for r in refs}
    emb = get_embedder("efficientnet-lite0")
    keys = [r["key"] for r in refs]
    rng = np.random.default_rng(1)
    known = [refs[i] for i in sorted(rng.choice(len(refs), N_KNOWN, replace=False))]
    clean = ReferenceIndex.empty(emb.dim, emb.name, emb.weights_hash)
    clean.add(embed_images(emb, [r["x"] for r in refs]).numpy(), keys)
    rows, lines = {}, []
    for task in TASKS:
        matched = ReferenceIndex.empty(emb.dim, emb.name, emb.weights_hash)
        # the corpus degraded with its own draws (key + "/ref"): never the query's noise
        matched.add(embed_images(emb, [prepared(task, r["x"], r["key"] + "/ref")
                                       for r in refs]).numpy(), keys)
        q = embed_images(emb, [prepared(task, t["x"], t["key"]) for t in test]).numpy()
        qk = embed_images(emb, [prepared(task, r["x"], r["key"]) for r in known]).numpy()
        for name, index in (("clean index", clean), ("matched index", matched)):
            found = index.search(q, K)[1]
            rate = {d: float(np.mean([np.mean([dom[i] == t["domain"] for i in f])
                                      for t, f in zip(test, found, strict=True)
                                      if t["domain"] == d]))
                    for d in ("astro", "photo")}
            acc = retrieval_accuracy(index.search(qk, 5)[1], [r["key"] for r in known])
            rows[f"{task}/{name}"] = {"same_class": rate, "known": acc}
            lines.append(f"| {task} | {name} | {rate['astro']:.2f} | {rate['photo']:.2f} | "
                         f"{acc['top1']:.2f} | {acc['top5']:.2f} |")
            print(lines[-1], flush=True)
    md = "\n".join([
        "Same-class rate of the K = 8 neighbours of degraded test images (8 astronomy, 8 "
        "held-out photos; corpus 150 astronomy images + the prior's training photos), and "
        f"top-1/top-5 of the true source for {N_KNOWN} degraded corpus images "
        "(benchmarks/explore_retrieval_degraded.py).", "",
        "| task | index | same-class astro | same-class photo | known top-1 | known top-5 |",
        "|---|---|---|---|---|---|", *lines, "",
        f"{time.perf_counter() - t0:.0f} s."])
    print(write_results("explore_retrieval_degraded", {"rows": rows, "k": K}, md).read_text())


if __name__ == "__main__":
    main()
