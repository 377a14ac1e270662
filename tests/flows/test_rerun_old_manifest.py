"""A manifest written by an older version reruns to bit-identical outputs (issue 18:
refactors keep settings hashes, seeds and pixels). ``data/manifest-ad8a0bd.json`` was
written by ``restoreflow run`` at commit ad8a0bd (before the stages layer and the typed
settings) on the image and tiny prior this test rebuilds; the digests below are that
run's degraded and restored pixels.

The restored pixels come out of float32 convolutions whose last bits depend on the CPU's
vector instructions (PyTorch picks AVX-512 or AVX2 kernels at run time): bit-identity
holds on one kind of CPU, not across kinds. The ad8a0bd digest was recorded on an
AVX-512 machine; the AVX2 one is what 4a5d64a (bit-identical to ad8a0bd on AVX-512, CI
of stop 25) writes on an AVX2-only machine. On another kind only the degraded pixels
(numpy) are checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import save_tiny_prior

DATA = Path(__file__).parent / "data" / "manifest-ad8a0bd.json"
IMAGE_ID = "0a4aab20dfc7db708eb9"
DEGRADED = "4d8e48cc572bfdbc3c36f0ab53c3ce1c99934645bfe913aa1027477e49bef6a0"
RESTORED = {  # torch.backends.cpu.get_cpu_capability() -> digest
    "AVX512": "36c75a6ec51504c47013b44434eecfabe7a4ccb1e9b0d1a2e4a646623f902418",
    "AVX2": "b36e16589e411abbf869d1f091fa3dab9082827c4fbddd4fd30378111ff8f617",
}


@pytest.mark.slow
def test_manifest_of_ad8a0bd_reruns_bit_identical(tmp_path):
    from restoreflow.storage.store import TileStore

    rng = np.random.default_rng(123)
    (tmp_path / "src").mkdir()
    img = (np.kron(rng.random((6, 6, 3)), np.ones((8, 8, 1))) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "src" / "old.png")
    prior = save_tiny_prior(tmp_path / "prior")
    manifest = json.loads(DATA.read_text())
    manifest["spec"].update(sources=[str(tmp_path / "src")], prior=prior,
                            store=str(tmp_path / "old-store"))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))

    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("RESTOREFLOW_", "AWS_", "PREFECT_API_URL"))},
           "RESTOREFLOW_DASK_WORKERS": "1", "RESTOREFLOW_TILE_SIZE": "16",
           "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(tmp_path / "ph"),
           "RESTOREFLOW_LOG_DIR": str(tmp_path / "logs")}
    exe = os.path.join(os.path.dirname(sys.executable), "restoreflow")
    store = tmp_path / "store"
    r = subprocess.run([exe, "rerun", str(tmp_path / "manifest.json"), "--store", str(store)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ts = TileStore(store)
    (run,) = [p for p in (store / "runs").iterdir() if p.is_dir()]
    new = json.loads((run / "manifest.json").read_text())
    assert new["settings_hash"] == manifest["settings_hash"]
    assert new["spec"]["degradation"] == manifest["spec"]["degradation"]
    import torch

    def digest(coll):
        return hashlib.sha256(np.ascontiguousarray(ts.read(coll, IMAGE_ID)).tobytes()).hexdigest()

    assert digest("degraded") == DEGRADED
    isa = torch.backends.cpu.get_cpu_capability()
    if isa in RESTORED:
        assert digest("restored") == RESTORED[isa], isa
    else:
        assert ts.read("restored", IMAGE_ID).shape == ts.read("degraded", IMAGE_ID).shape
