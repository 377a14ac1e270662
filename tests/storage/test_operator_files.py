"""The files a degradation reads (PSF, mask): formats, validation and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restoreflow.storage.operator_files import read_kernel, read_mask


def test_read_kernel_npy_and_fits(tmp_path):
    from astropy.io import fits

    k = np.arange(1.0, 13.0).reshape(4, 3)
    np.save(tmp_path / "k.npy", k)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(k)]).writeto(tmp_path / "k.fits")
    for name in ("k.npy", "k.fits"):
        loaded = read_kernel(tmp_path / name)
        assert torch.allclose(loaded, torch.from_numpy(k / k.sum()))


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (np.ones((3, 3, 3)), "must be 2-D"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, -0.5], [1.0, 1.0]]), "negative"),
        (np.zeros((3, 3)), "positive sum"),
    ],
)
def test_invalid_kernels_are_rejected(tmp_path, kernel, message):
    np.save(tmp_path / "bad.npy", kernel)
    with pytest.raises(ValueError, match=message):
        read_kernel(tmp_path / "bad.npy")


def test_kernel_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_kernel(tmp_path / "missing.npy")
    (tmp_path / "k.txt").write_text("1")
    with pytest.raises(ValueError, match="unsupported"):
        read_kernel(tmp_path / "k.txt")


def test_read_mask_png_and_npy(tmp_path):
    from PIL import Image

    m = np.zeros((6, 7), dtype=np.uint8)
    m[1:4, 2:5] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    np.save(tmp_path / "m.npy", m > 0)
    for name in ("m.png", "m.npy"):
        loaded = read_mask(tmp_path / name)
        assert loaded.dtype == torch.bool and torch.equal(loaded, torch.from_numpy(m > 0))
