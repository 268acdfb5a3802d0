"""Link emulation for the lab: rate with tbf, delay/jitter/loss with netem or a userspace TAP delay line.

Public API (the contract with the namespace backend): LinkShape, netem_available, build_wire, reshape_wire, emulator_settings, Wire.
"""

from mptcpkit.lab.emulation.netem import netem_available
from mptcpkit.lab.emulation.patch_panel import Wire, build_wire, emulator_settings, reshape_wire
from mptcpkit.lab.emulation.shape import LinkShape

__all__ = ["LinkShape", "Wire", "build_wire", "emulator_settings", "netem_available", "reshape_wire"]
