"""Who a lab machine is (CPU, kernel, NICs, backend, class), recorded in the environment of every fleet run."""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

ENV_VAR = "MPTCPKIT_FLEET_MACHINE"
"""The worker hands its identity to the child `lab run` through this variable (JSON)."""


def nics() -> list[dict[str, Any]]:
    """Physical-ish interfaces (no lo, no lab veths): name, driver, speed in Mbit/s, MTU."""
    found = []
    for path in sorted(Path("/sys/class/net").iterdir()):
        if path.name == "lo" or path.name.startswith(("mkl", "veth", "mk")):
            continue
        driver = path / "device" / "driver"
        try:
            speed = int((path / "speed").read_text().strip())
        except (OSError, ValueError):
            speed = None
        try:
            mtu = int((path / "mtu").read_text().strip())
        except (OSError, ValueError):
            mtu = None
        found.append(
            {
                "name": path.name,
                "driver": driver.resolve().name if driver.exists() else None,
                "speed_mbit": speed if speed and speed > 0 else None,
                "mtu": mtu,
            }
        )
    return found


def machine_identity(machine_id: str, classes: list[str], backend: str) -> dict[str, Any]:
    from mptcpkit.lab.environment import cpu_model

    return {
        "machine_id": machine_id,
        "machine_class": classes[0] if classes else None,
        "classes": list(classes),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "nics": nics(),
        "backend": backend,
    }


def from_environment() -> dict[str, Any]:
    """The identity a fleet worker passed down, for the run's environment ({} outside the fleet)."""
    text = os.environ.get(ENV_VAR)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    # Results are compared only within one machine class: the class is the run's environment key.
    cls = value.get("machine_class")
    return {"fleet": value, **({"environment_key": f"class:{cls}"} if cls else {})}
