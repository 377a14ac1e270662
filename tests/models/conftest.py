"""Fixtures for model tests: a tiny randomly initialised diffusers UNet."""

from __future__ import annotations

import pytest

from helpers import make_tiny_unet


@pytest.fixture()
def tiny_unet():
    return make_tiny_unet
