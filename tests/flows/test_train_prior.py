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
    # bf16 autocast only where the CPU computes bf16 natively (emulated it is 35x slower)
    from restoreflow.models.training import bf16_native

    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["bf16_autocast"] is bf16_native(torch.device("cpu"))
    assert cfg["bf16_autocast"] is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    # resume: runs only the remaining steps and moves the weights
    train_prior_flow(steps=5, **common)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5
    again = DiffusionPrior.load(path)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(prior.eps(x, 10), again.eps(x, 10))


def test_init_from_starts_at_the_given_prior(tmp_path):
    """--init-from: step 0 of the new run is the given prior (EMA and weights)."""
    from restoreflow.models.training import TrainConfig, train_prior

    img = [samples.sample_path("coins.png")]
    base = dict(batch_size=2, num_threads=1, bf16_autocast=False)
    src = DiffusionPrior.load(train_prior(TrainConfig(out_dir=str(tmp_path / "a"), steps=2,
                                                      **base), img, log=lambda s: None))
    # lr 0: the weights cannot move, so the export equals the source prior exactly
    warm = DiffusionPrior.load(train_prior(
        TrainConfig(out_dir=str(tmp_path / "b"), steps=1, lr=0.0, init_from=str(src.source),
                    **base), img, log=lambda s: None))
    cold = DiffusionPrior.load(train_prior(
        TrainConfig(out_dir=str(tmp_path / "c"), steps=1, lr=0.0, seed=1, **base), img,
        log=lambda s: None))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(src.eps(x, 10), warm.eps(x, 10))
        assert not torch.equal(src.eps(x, 10), cold.eps(x, 10))


def test_attention_option_adds_lowest_level_attention():
    from restoreflow.models.training import TrainConfig, build_unet

    plain = build_unet(TrainConfig(out_dir="unused"))
    attn = build_unet(TrainConfig(out_dir="unused", attention=True))
    assert plain.config.down_block_types[-1] == "DownBlock2D"
    assert attn.config.down_block_types[-1] == "AttnDownBlock2D"
    assert attn.config.up_block_types[0] == "AttnUpBlock2D"
    assert sum(p.numel() for p in attn.parameters()) > sum(p.numel() for p in plain.parameters())
