"""Flow and task runs are named after the run spec, the run id and the image (issue 19
item 6), read back from the Prefect API the flows reported to."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import save_tiny_prior


def _pngs(d, names, seed=0, size=32):
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for n in names:
        base = rng.random((size // 4, size // 4, 3))
        Image.fromarray((np.kron(base, np.ones((4, 4, 1))) * 255).astype(np.uint8)).save(d / n)
    return str(d)


def _runs(flow_run_id=None, flow_name=None):
    """(flow runs, task runs) from the API; task runs of ``flow_run_id`` only."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        ) if flow_run_id else []
    return flows, tasks


@pytest.mark.parametrize("stale_start_name", [False, True])
def test_pipeline_runs_named_after_run_id_and_images(prefect_api, tmp_path, monkeypatch,
                                                     stale_start_name):
    from restoreflow.flows.pipeline import pipeline_flow
    from restoreflow.settings import get_settings
    from restoreflow.tasks import names as run_names

    if stale_start_name:  # the clock moved on before the run id was taken: renamed at the end
        real, calls = run_names.run_id, []

        def first_call_stale(*a, **k):  # the flow run's name is taken first, then the id
            calls.append(a)
            return "names-test-provisional" if len(calls) == 1 else real(*a, **k)

        monkeypatch.setattr(run_names, "run_id", first_call_stale)

    monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "16")
    get_settings.cache_clear()
    spec = {
        "name": "names-test", "sources": [_pngs(tmp_path / "src", ["cat.png", "dog.png"])],
        "store": str(tmp_path / "store"), "simulate": True,
        "degradation": "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)",
        "prior": save_tiny_prior(tmp_path / "prior"),
        "restore": {"steps": 2, "tile": 32, "overlap": 8, "posterior_samples": 1},
        "report": None,
    }
    try:
        summary = pipeline_flow(spec)
    finally:
        get_settings.cache_clear()
    run_id = summary["run_id"]
    flows, _ = _runs(flow_name="pipeline")
    mine = [f for f in flows if f.parameters.get("spec", {}).get("store") == spec["store"]]
    assert [f.name for f in mine] == [run_id]
    assert run_id.startswith("names-test-") and run_id.endswith(summary["spec_hash"][:8])

    _, tasks = _runs(flow_run_id=mine[0].id)
    names = sorted(t.name for t in tasks)
    restore = sorted(n for n in names if n.startswith("restore "))
    from restoreflow.storage.store import TileStore

    ids = {TileStore(spec["store"]).attrs("input", i)["name"]: i
           for i in TileStore(spec["store"]).image_ids("input")}
    assert restore == [f"restore {n} [{ids[n][:8]}]" for n in ("cat.png", "dog.png")]
    assert any(n.startswith("simulate cat.png [") or n.startswith("simulate dog.png [")
               for n in names), names
    assert any(n.startswith("ingest ") and n.endswith("src") for n in names), names
    # no Prefect-generated names ("restore-image-069") left
    assert not [n for n in names if n.split("-")[-1].isdigit()], names


def test_other_flows_named_after_what_they_do(prefect_api, tmp_path):
    from restoreflow.flows.simulate import simulate_flow
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    store = TileStore(tmp_path / "store")
    ingest([_pngs(tmp_path / "src", ["owl.png"])], store, progress=False)
    simulate_flow(store=store.uri, degradation="gaussian_blur(sigma=1)", seed=3,
                  collection="blurred")
    flows, _ = _runs(flow_name="simulate")
    assert "simulate gaussian_blur(sigma=1) seed 3 -> blurred" in [f.name for f in flows]


@pytest.mark.parametrize("parameters, expected", [
    ({"store_uri": "/nowhere", "image_id": "0123456789abcdef0123"}, "[01234567]"),
])
def test_image_label_falls_back_to_the_id(parameters, expected):
    from restoreflow.tasks.names import image_label

    assert image_label(parameters["store_uri"], parameters["image_id"]) == expected
