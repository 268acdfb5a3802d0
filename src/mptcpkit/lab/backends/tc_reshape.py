"""set-link for backends that shape with tc on each sender's egress (SSH machines, multi-VM guests).

The plan's numbers for the new shape (plan.to_shape, tbf bucket, netem limit) rendered as one
`tc qdisc replace|del` per direction, run on the sending host; netem is probed once per host when a new
shape needs a delay line.
"""

from __future__ import annotations

import uuid

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.backends.ssh_plan import netem_probe_script, reshape_argv, reshaped
from mptcpkit.lab.model import Direction
from mptcpkit.lab.plan import LabPlan, plan_lab, to_shape


class TcReshaper:
    """`Lab.set_link_shape` by tc commands over the backend's own `LabHost.run`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._plan: LabPlan | None = None
        self._netem: dict[str, bool] = {}

    def __call__(self, name: str, a_to_b: Direction, b_to_a: Direction) -> None:
        if self._plan is None:
            self._plan = plan_lab(self.lab.topology)
        for direction, model in (("a_to_b", a_to_b), ("b_to_a", b_to_a)):
            planned = next(
                (s for s in self._plan.shaping if s.link == name and s.direction == direction), None
            )
            if planned is None:
                raise LabError(f"this lab has no link '{name}'")
            new = reshaped(planned, to_shape(model))
            has_netem = new.shape.needs_delay_line and self._has_netem(new.sender)
            argv = reshape_argv(new, has_netem)
            result = self.lab.host(new.sender).run(argv, check=False, timeout=30)
            if result.returncode != 0 and argv[2] != "del":  # del: the direction may have had no qdisc
                raise LabError(f"{new.sender}: {' '.join(argv)} failed: {result.stderr.strip()}")

    def _has_netem(self, host: str) -> bool:
        if host not in self._netem:
            script = netem_probe_script(f"mkt{uuid.uuid4().hex[:8]}")
            self._netem[host] = self.lab.host(host).run(["sh", "-c", script], check=False).returncode == 0
        return self._netem[host]
