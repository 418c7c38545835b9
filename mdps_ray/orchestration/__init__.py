"""Orchestration: the only package that imports Ray (Ray Data scoring, Ray Train training).

Without ``RAY_ADDRESS`` the jobs start an embedded Ray. Ray reads whether it may bind other interfaces
than loopback once, when it is imported, so the switch is set here, before any module of this package
imports Ray: an embedded Ray listens on 127.0.0.1 only (tested: every socket it opens).
"""

import os

if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
