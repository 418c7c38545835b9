"""Real infrastructure for tests: moto's S3 server on loopback, Ray clusters (embedded, and `ray start`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

VENV_BIN = Path(sys.executable).parent
FAKE_SECRET = "FAKE-SECRET-do-not-log-0123456789abcdef"
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """moto_server on 127.0.0.1:<free port>, with one bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = "mdps-test"
        self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("moto_server did not start within 30 s")
        self.fs().mkdir(self.bucket)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": "test", "secret": FAKE_SECRET, "client_kwargs": {"endpoint_url": self.endpoint}}

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def upload(self, local: Path, prefix: str) -> str:
        self.fs().put(str(local), f"{self.bucket}/{prefix}", recursive=True)
        return f"s3://{self.bucket}/{prefix}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One embedded Ray for the session (2 CPUs), shut down at the end."""
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    from mdps_ray.orchestration.cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def isolation_flags(temp_dir: Path, port: int, dashboard_port: int) -> list[str]:
    """`ray start --head` flags that keep a test's cluster to itself on a shared machine: loopback, its
    own ports and temp dir, 2 CPUs, a capped object store."""
    return ["--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", f"--dashboard-port={dashboard_port}",
            "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", "--object-store-memory=1000000000",
            # own ports: the defaults (e.g. 52365) collide with any other Ray on this machine
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def ray_temp_dir() -> Path:
    # Short: Ray's AF_UNIX socket paths under the temp dir must stay below 108 bytes.
    return Path(tempfile.mkdtemp(prefix="mdpsray-", dir="/tmp"))


def kill_cluster(temp_dir: Path) -> None:
    """Kill only the process trees of the cluster under ``temp_dir`` (`ray stop` would stop every Ray
    of the user), then remove the folder."""
    import psutil

    marker = str(temp_dir)
    roots = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
    procs = []
    for p in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(int(p.name))
            procs += [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)
    shutil.rmtree(temp_dir, ignore_errors=True)


class HeadNode:
    """`ray start --head` on 127.0.0.1 with its own temp dir; stopped by killing only its processes."""

    def __init__(self, tmp: Path) -> None:
        self.env = {**os.environ, **RAY_ENV, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}  # an active venv
        self.env.pop("RAY_ADDRESS", None)
        self.port = free_port()
        self.dashboard_port = free_port()
        self.temp_dir = ray_temp_dir()
        cmd = [str(VENV_BIN / "ray"), "start", "--head", *isolation_flags(self.temp_dir, self.port,
                                                                          self.dashboard_port)]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {(proc.stdout + proc.stderr)[-3000:]}")
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def submit(self, entrypoint: list[str], working_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [str(VENV_BIN / "ray"), "job", "submit", f"--address={self.dashboard}",
               f"--working-dir={working_dir}", "--", *entrypoint]
        deadline = time.monotonic() + 90  # the job agent comes up some seconds after `ray start`
        while True:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
            if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
                return proc
            time.sleep(3)

    def stop(self) -> None:
        kill_cluster(self.temp_dir)


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker in (proc / "cmdline").read_bytes().decode(errors="ignore")
    except OSError:
        return False
