"""Cases for the operator property tests: every registry operator x its example params.

A test that takes the ``case`` argument runs once per (operator, example params);
``build_case(case, shape)`` builds the float64 operator for an image of shape
(B, C, H, W), writing the example kernel/mask files that ``path`` params refer to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restoreflow.operators.registry import OPERATORS, build_operator
from restoreflow.storage.operator_files import read_operator_file

CASES = [(name, params) for name, entry in OPERATORS.items() for params in entry.example_params]


def case_id(case: tuple[str, dict]) -> str:
    name, params = case
    inner = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{name}({inner})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=[case_id(c) for c in CASES])


def example_kernel() -> np.ndarray:
    """An asymmetric 5x3 PSF (non-negative, not normalised)."""
    return np.arange(1.0, 16.0).reshape(5, 3) ** 1.5


def example_mask(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((h, w)) > 0.3


def write_example_file(directory, name: str, h: int, w: int) -> str:
    path = directory / name
    if name == "psf.npy":
        np.save(path, example_kernel())
    elif name == "psf.fits":
        from astropy.io import fits

        fits.PrimaryHDU(example_kernel().astype(np.float32)).writeto(path, overwrite=True)
    elif name == "mask.npy":
        np.save(path, example_mask(h, w).astype(np.uint8))
    elif name == "mask.png":
        from PIL import Image

        Image.fromarray(example_mask(h, w).astype(np.uint8) * 255).save(path)
    else:  # pragma: no cover
        raise AssertionError(name)
    return str(path)


@pytest.fixture()
def build_case(tmp_path):
    """``build_case(case, x_shape, seed=0, dtype=float64)`` -> operator."""

    def build(case, x_shape, seed: int = 0, dtype=torch.float64):
        name, params = case
        _, c, h, w = x_shape
        if "path" in params:
            params = {**params, "path": write_example_file(tmp_path, params["path"], h, w)}
        g = torch.Generator().manual_seed(seed)
        return build_operator(name, params, (c, h, w), g, dtype=dtype,
                              read_file=read_operator_file)

    return build


def dense_matrix(op, x_shape) -> torch.Tensor:
    """The (m x n) matrix of A for inputs of shape (1, C, H, W): A applied to the basis."""
    n = int(np.prod(x_shape[1:]))
    eye = torch.eye(n, dtype=torch.float64).view(n, *x_shape[1:])
    return op.A(eye).reshape(n, -1).T.contiguous()


@pytest.fixture()
def dense():
    return dense_matrix
