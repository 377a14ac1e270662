"""Which prior a job uses: run spec / --prior > RESTOREFLOW_PRIOR > the shipped prior."""

from __future__ import annotations

import numpy as np
from PIL import Image

from helpers import save_tiny_prior


def _settings_env(monkeypatch, prior: str | None):
    from restoreflow.settings import get_settings

    if prior is None:
        monkeypatch.delenv("RESTOREFLOW_PRIOR", raising=False)
    else:
        monkeypatch.setenv("RESTOREFLOW_PRIOR", prior)
    get_settings.cache_clear()


def test_precedence_spec_then_environment_then_shipped(tmp_path, monkeypatch):
    from restoreflow.spec import RunSpec
    from restoreflow.stages.config import RestoreConfig

    env_prior = save_tiny_prior(tmp_path / "env-prior")
    spec_prior = save_tiny_prior(tmp_path / "spec-prior", seed=1)
    base = {"name": "t", "sources": [str(tmp_path)], "store": str(tmp_path / "s"),
            "degradation": "gaussian_blur(sigma=1)"}
    try:
        _settings_env(monkeypatch, env_prior)
        assert RestoreConfig.from_run(RunSpec.model_validate(base)).prior == env_prior
        with_spec = RunSpec.model_validate({**base, "prior": spec_prior})
        assert RestoreConfig.from_run(with_spec).prior == spec_prior
        _settings_env(monkeypatch, None)
        assert RestoreConfig.from_run(RunSpec.model_validate(base)).prior is None
    finally:
        _settings_env(monkeypatch, None)


def test_restore_flow_uses_and_records_the_environment_prior(prefect_api, tmp_path,
                                                             monkeypatch):
    from restoreflow.degradation import DegradationSpec
    from restoreflow.flows.restore import restore_flow
    from restoreflow.models.prior import hash_model_dir
    from restoreflow.stages.config import RestoreConfig
    from restoreflow.stages.models import prior_hash
    from restoreflow.stages.simulate import simulate_image
    from restoreflow.storage.ingest import ingest
    from restoreflow.storage.store import TileStore

    deg = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "src" / "a.png")
    store = TileStore(tmp_path / "store", tile_size=16)
    (image_id,) = [r.image_id for r in ingest([str(tmp_path / "src")], store,
                                              progress=False).rows]
    simulate_image(store, image_id, DegradationSpec.parse(deg))
    env_prior = save_tiny_prior(tmp_path / "env-prior")
    cfg = RestoreConfig(degradation=deg, restore={"steps": 2})
    try:
        _settings_env(monkeypatch, env_prior)
        monkeypatch.setenv("RESTOREFLOW_TILE_SIZE", "16")
        restore_flow(str(tmp_path / "store"), cfg)
    finally:
        _settings_env(monkeypatch, None)
    attrs = TileStore(tmp_path / "store").attrs("restored", image_id)
    assert attrs["prior_hash"] == hash_model_dir(env_prior) != prior_hash(None)
    # the settings parameter as the Prefect API recorded it: its JSON form, which
    # validates back into the same settings (a rerun from the Prefect UI)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (run,) = [r for r in client.read_flow_runs()
                  if r.parameters.get("store") == str(tmp_path / "store")]
    assert run.parameters["cfg"] == cfg.model_dump(mode="json")
    assert RestoreConfig.model_validate(run.parameters["cfg"]) == cfg
    assert run.name == f"restore degraded -> restored: {cfg.degradation}, hqs 2 steps"
