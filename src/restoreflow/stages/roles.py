"""The role of each input image of a store: a source (to degrade and restore), a
calibration image or a corpus image. Ingest does not record roles; they follow from where
an image went: calibration-* collections (calibrate, a spec's calibration.clean),
reference indexes (index build, a spec's adapt.corpus) and the collections derived from
sources (degraded, restored...)."""

from __future__ import annotations

import json

from restoreflow.storage import layout


def input_roles(ts, collections: list[str]) -> dict[str, str]:
    """{image id: role} for the input images that are not (only) sources: "calibration"
    (in a calibration-* collection: calibrate and a spec's calibration.clean), "corpus"
    (in a reference index: index build and a spec's adapt.corpus), both joined by ", ",
    with "source" too when the image was also degraded or restored as a source. The
    store records roles this way only; an image in none of them is a source."""
    calibration: set[str] = set()
    derived: set[str] = set()
    for c in collections:
        if c != "input":
            (calibration if c.startswith("calibration-") else derived).update(
                ts.listed_ids(c))
    corpus: set[str] = set()
    for path in ts.list_files("index"):
        if path.endswith("/index.json"):
            try:
                corpus.update(json.loads(ts.get_bytes(path)).get("ids", []))
            except (OSError, ValueError):
                continue
    roles = {}
    for iid in calibration | corpus:
        found = [r for r, ids in (("source", derived), ("calibration", calibration),
                                  ("corpus", corpus)) if iid in ids]
        roles[iid] = ", ".join(found)
    return roles


def source_ids(ts) -> list[str]:
    """The complete input images that are sources: not calibration or corpus images only
    (so ``simulate`` never degrades the images ``calibrate`` or ``index build`` ingested)."""
    roles = input_roles(ts, ts.collections())
    return [i for i in ts.image_ids(layout.INPUT) if "source" in roles.get(i, "source")]
