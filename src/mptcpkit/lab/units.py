"""Parsing of human units in topology files: rates, durations, fractions, sizes, queue lengths.

Pure functions; each raises ValueError with a message that says what a valid value looks like.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_RATE_UNITS = {
    "bit": 1,
    "bps": 1,
    "kbit": 1_000,
    "kbps": 1_000,
    "mbit": 1_000_000,
    "mbps": 1_000_000,
    "gbit": 1_000_000_000,
    "gbps": 1_000_000_000,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_rate(value: object) -> int:
    """'50mbit', '1.5 Gbit/s', '500kbit' or a number of bit/s -> bit/s."""
    if isinstance(value, bool):
        raise ValueError("expected a rate such as '50mbit', got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"rate must be a positive, finite number of bit/s, got {value}")
        if value < 1:
            raise ValueError(f"rate must be at least 1 bit/s, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a rate such as '50mbit', got {value!r}")
    match = re.fullmatch(_NUMBER + r"\s*([a-zA-Z]+)(?:/s)?", value.strip())
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _RATE_UNITS:
        raise ValueError(f"cannot read {value!r} as a rate (use e.g. '10mbit', '1gbit', '500kbit')")
    number = float(match.group(1)) * _RATE_UNITS[unit]
    if not math.isfinite(number):
        raise ValueError(f"rate {value!r} is too large")
    rate = int(number)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {value!r}")
    return rate


def parse_duration(value: object) -> float:
    """'10ms', '1.5ms', '200us', '1s' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '10ms', got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration must be a finite number of seconds >= 0, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '10ms', got {value!r}")
    match = re.fullmatch(_NUMBER + r"\s*(s|ms|us|µs|ns)", value.strip())
    if not match:
        raise ValueError(f"cannot read {value!r} as a duration (use e.g. '10ms', '250us', '1.5s')")
    seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"duration {value!r} is too large")
    return seconds


def parse_fraction(value: object) -> float:
    """'1%', '0.5 %' or a fraction 0..1 -> fraction."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage such as '1%', got a boolean")
    if isinstance(value, str):
        match = re.fullmatch(_NUMBER + r"\s*%", value.strip())
        if not match:
            raise ValueError(f"cannot read {value!r} as a percentage (use e.g. '1%' or 0.01)")
        fraction = float(match.group(1)) / 100
        if not math.isfinite(fraction):
            raise ValueError(f"must be between 0% and 100%, got {value!r}")
    elif isinstance(value, int | float):
        fraction = float(value)
        if not math.isfinite(fraction):
            raise ValueError(f"must be between 0% and 100%, got {value!r}")
    else:
        raise ValueError(f"expected a percentage such as '1%', got {value!r}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"must be between 0% and 100%, got {value!r}")
    return fraction


@dataclass(frozen=True, slots=True)
class Bdp:
    """A queue length in bandwidth-delay products of its link: rate x round-trip delay, in full frames."""

    multiple: float

    def packets(self, rate_bps: int, rtt_s: float, frame_bytes: int) -> int:
        """Full-size frames (MTU + Ethernet header) in ``multiple`` BDPs; at least one."""
        return max(1, math.ceil(self.multiple * rate_bps * rtt_s / 8 / frame_bytes))


def parse_queue(value: object) -> int | Bdp:
    """A bottleneck queue: a number of packets (1000), or bandwidth-delay products ('1bdp', '0.5 bdp')."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a number of packets or e.g. '1bdp', got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"queue must hold at least 1 packet, got {value}")
        return value
    match = re.fullmatch(_NUMBER + r"\s*bdp", value.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"cannot read {value!r} as a queue length (use packets, e.g. 1000, or e.g. '1bdp')")
    return Bdp(float(match.group(1)))


def format_rate(bps: float) -> str:
    """bit/s -> '50 Mbit/s' (for tables and messages)."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.4g} {unit}"
    return f"{bps:.4g} bit/s"


def format_duration(seconds: float) -> str:
    """seconds -> '10 ms'."""
    if seconds >= 1:
        return f"{seconds:.4g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds * 1e6:.4g} us"
