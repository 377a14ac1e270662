"""Shared benchmark helpers: hardware description and result writing."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def hardware() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(name: str, payload: dict, markdown: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"hardware": hardware(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    hw = payload["hardware"]
    head = (f"Hardware: {hw['cpu']}, {hw['cores']} cores, torch threads {hw['torch_threads']}, "
            f"GPU {hw['gpu']}; {hw['date']}\n\n")
    path = RESULTS / f"{name}.md"
    path.write_text(head + markdown.strip() + "\n")
    return path


def shown_like(im, clean):
    """``im`` (C, h, w) on ``clean``'s grid for a figure: an SR input by nearest
    upsampling, anything else as it is."""
    if im.shape[-1] != clean.shape[-1]:
        im = im.repeat_interleave(clean.shape[-1] // im.shape[-1], -1)
        im = im.repeat_interleave(clean.shape[-2] // im.shape[-2], -2)
    return im
