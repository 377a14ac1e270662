"""The files a degradation reads: a PSF (``kernel_blur(path=...)``) and an inpainting mask
(``inpaint_mask(path=...)``). Operators take the arrays; reading them is storage's job."""

from __future__ import annotations

from pathlib import Path

import torch

from restoreflow.operators.kernels import validate_kernel


def read_kernel(path: str | Path) -> torch.Tensor:
    """Load a PSF from ``.npy`` or FITS (``.fits``, ``.fit``, ``.fts``, optionally ``.gz``).

    FITS: the first HDU with 2-D data is used. Returns a normalised float64 kernel.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"kernel file not found: {p}")
    name = p.name.lower()
    if name.endswith(".npy"):
        import numpy as np

        arr = np.load(p, allow_pickle=False)
    elif name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")):
        import numpy as np
        from astropy.io import fits

        arr = None
        with fits.open(p, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None and hdu.data.ndim == 2:
                    arr = np.array(hdu.data, dtype=np.float64)
                    break
        if arr is None:
            raise ValueError(f"{p}: no 2-D image HDU in FITS file")
    else:
        raise ValueError(f"{p}: unsupported kernel file type (use .npy or .fits)")
    import numpy as np

    return validate_kernel(torch.from_numpy(np.asarray(arr, dtype=np.float64)), str(p))


def read_mask(path: str | Path) -> torch.Tensor:
    """Load a keep-mask from ``.npy`` (2-D) or an image file (PNG...): nonzero = keep.

    A multi-channel image keeps a pixel when any channel is nonzero.
    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask file not found: {p}")
    if p.name.lower().endswith(".npy"):
        arr = np.load(p, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(p) as im:
            arr = np.asarray(im)
        if arr.ndim == 3:
            arr = (arr != 0).any(axis=2)
    if arr.ndim != 2:
        raise ValueError(f"{p}: a mask must be 2-D, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr != 0))


#: What an operator's ``path`` parameter holds -> its reader (operators.registry.Entry.reads)
READERS = {"kernel": read_kernel, "mask": read_mask}


def read_operator_file(kind: str, path: str) -> torch.Tensor:
    """The array of kind ``kind`` ("kernel" or "mask") stored at ``path``."""
    return READERS[kind](path)
