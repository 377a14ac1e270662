"""train-prior flow: trains, exports a loadable prior, resumes from its checkpoint."""

from __future__ import annotations

import json

import torch

from restoreflow import samples
from restoreflow.models.prior import DiffusionPrior


def test_train_prior_flow_trains_exports_and_resumes(prefect_api, tmp_path):
    from restoreflow.flows.train_prior import train_prior_flow

    img = [str(samples.sample_path("coins.png"))]
    common = dict(out_dir=str(tmp_path / "run"), batch_size=2, images=img, num_threads=1)
    path = train_prior_flow(steps=3, **common)
    prior = DiffusionPrior.load(path)
    assert prior.num_train_timesteps == 1000
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    # resume: runs only the remaining steps and moves the weights
    train_prior_flow(steps=5, **common)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5
    again = DiffusionPrior.load(path)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(prior.eps(x, 10), again.eps(x, 10))
