"""Shared header for the latency benchmarks: the machine they ran on and the date."""
from __future__ import annotations

import datetime as _dt
import os


def header(title: str) -> None:
    from latency_models.profile import machine_info

    info = machine_info()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"== {title}")
    print(f"   machine: {info['cpu']}, {info['cores']} cores (load average {load}); python {info['python']}, "
          f"onnxruntime {info.get('onnxruntime')}, torch {info['torch']}")
    print(f"   date: {_dt.datetime.now().isoformat(timespec='seconds')}")
