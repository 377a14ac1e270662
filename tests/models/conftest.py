"""Fixtures for model tests: a tiny randomly initialised diffusers UNet."""

from __future__ import annotations

import pytest
import torch


def make_tiny_unet(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)  # test-only: reproducible random init of the tiny model
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


@pytest.fixture()
def tiny_unet():
    return make_tiny_unet
