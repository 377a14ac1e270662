"""Helpers shared by the test packages (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import torch


def make_tiny_unet(seed: int = 0):
    """A tiny randomly initialised diffusers UNet2DModel (8/16 channels, size multiple 2)."""
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):  # reproducible init, global RNG left untouched
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
        ).eval()


def save_tiny_prior(path, seed: int = 0) -> str:
    """A tiny prior saved in diffusers format at ``path``; returns the path."""
    from restoreflow.models.prior import DiffusionPrior

    DiffusionPrior.from_unet(make_tiny_unet(seed)).save_pretrained(path)
    return str(path)
