"""The allocator tuning applies in a fresh process and is idempotent."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_allocator_applies_once_per_process():
    code = ("from restoreflow.models.allocator import tune_allocator as t\n"
            "print(t(), t())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": ""}, check=True)
    assert r.stdout.split() == ["True", "True"]
