"""The memory-lean 2-D FFTs equal torch's, in every band layout."""

from __future__ import annotations

import pytest
import torch

from restoreflow.operators import fft


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (2, 3, 17, 10), (1, 2, 9, 33)])
@pytest.mark.parametrize("band_bytes", [1, 64 * 16, 16 * 2**20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lean_fft_matches_torch(shape, band_bytes, dtype, monkeypatch):
    monkeypatch.setattr(fft, "BAND_BYTES", band_bytes)  # one row per band ... all at once
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    want = torch.fft.rfft2(x)
    got = fft.rfft2(x)
    assert got.dtype == want.dtype
    assert torch.allclose(got, want, atol=tol * shape[-1] * shape[-2])
    spec = want.clone()
    back = fft.irfft2_(spec, tuple(shape[-2:]))
    assert back.dtype == dtype
    assert torch.allclose(back, torch.fft.irfft2(want, s=shape[-2:]), atol=tol)
    assert torch.allclose(back, x, atol=tol)
    filtered = fft.filter_(want.clone(), lambda i0, i1: torch.full((i1 - i0, 1), 2.0))
    assert torch.allclose(filtered, 2 * want)


def test_irfft2_checks_the_spectrum_shape():
    with pytest.raises(ValueError, match="does not match"):
        fft.irfft2_(torch.zeros(4, 4, dtype=torch.complex64), (4, 8))
