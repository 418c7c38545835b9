"""The embedded Ray of `mdps score` / `mdps train` listens on loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = """
import json, psutil
from mdps_ray.orchestration.cluster import init_ray
init_ray(num_cpus=1)
me = psutil.Process()
addrs = {c.laddr.ip for p in [me, *me.children(recursive=True)]
         for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
print(json.dumps(sorted(addrs)))
"""


def test_every_socket_of_the_embedded_ray_is_on_loopback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # a user's shell: no Ray settings
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    addrs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert addrs and set(addrs) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addrs
