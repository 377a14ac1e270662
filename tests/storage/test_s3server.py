"""The SeaweedFS launcher: loopback only, safe flags, credentials enforced."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from restoreflow.storage.s3server import GRPC_OFFSET, SERVICES, free_ports, weed_command

pytestmark = pytest.mark.s3


def _listening(pid_ports):
    """(address, port) of every listening TCP socket on the given ports (IPv4 and IPv6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            addr, port = local.split(":")
            if int(port, 16) in pid_ports:
                found.append((addr, int(port, 16)))
    return found


def test_command_has_the_safe_flags(tmp_path):
    ports = free_ports()
    cmd = weed_command("weed", tmp_path, ports)
    for flag in ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                 "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", f"-dir={tmp_path}"):
        assert flag in cmd
    for name in SERVICES:
        assert f"-{name}.port={ports[name]}" in cmd
        assert ports[name] + GRPC_OFFSET < 65535
    assert len(set(ports.values())) == len(SERVICES)
    with pytest.raises(ValueError, match="10000"):
        weed_command("weed", tmp_path, {**ports, "s3": 60000})
    with pytest.raises(ValueError, match="missing"):
        weed_command("weed", tmp_path, {"s3": 30000})


def test_server_listens_on_loopback_only(s3_server):
    ports = set(s3_server.ports.values()) | {p + GRPC_OFFSET for p in s3_server.ports.values()}
    found = _listening(ports)
    assert found, "no listening socket found for the server's ports"
    # 0100007F is 127.0.0.1 in /proc's little-endian hex
    assert {addr for addr, _ in found} == {"0100007F"}, found
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    assert "secret" not in repr(s3_server) and s3_server.secret_key not in repr(s3_server)


def test_credentials_are_enforced(s3_server):
    import s3fs

    good = s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                             client_kwargs={"endpoint_url": s3_server.endpoint_url},
                             skip_instance_cache=True)
    good.pipe_file(f"{s3_server.bucket}/cred-check.txt", b"ok")
    bad = s3fs.S3FileSystem(key=s3_server.access_key, secret="wrong-secret",
                            client_kwargs={"endpoint_url": s3_server.endpoint_url},
                            skip_instance_cache=True)
    with pytest.raises(PermissionError):
        bad.cat_file(f"{s3_server.bucket}/cred-check.txt")
    anon = s3fs.S3FileSystem(anon=True, client_kwargs={"endpoint_url": s3_server.endpoint_url},
                             skip_instance_cache=True)
    with pytest.raises(PermissionError):
        anon.cat_file(f"{s3_server.bucket}/cred-check.txt")
    # nothing answers on a non-loopback address of this host
    host_ip = socket.gethostbyname(socket.gethostname())
    if not host_ip.startswith("127."):
        port = s3_server.ports["s3"]
        with pytest.raises(OSError), socket.create_connection((host_ip, port), timeout=1):
            pass


def test_serve_s3_command_prints_settings_and_stops_on_ctrl_c(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "restoreflow.cli", "serve-s3", "--dir", str(tmp_path / "d"),
         "--bucket", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "export RESTOREFLOW_S3_ENDPOINT_URL=http://127.0.0.1:" in text, text
        assert "export RESTOREFLOW_STORE=s3://demo/restoreflow-store" in text
        assert "export AWS_ACCESS_KEY_ID=" in text  # generated: printed once for the user
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)  # stop: SIGTERM, SIGKILL after 10 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopped" in out
    log = (tmp_path / "d" / "weed.log").read_text()
    assert "stopped" in log  # weed shut its services down (SIGTERM), it was not killed
