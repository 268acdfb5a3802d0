"""`lab status`: one row per lab of the one registry, whatever backend runs it."""

from __future__ import annotations

import time
from typing import Any

from mptcpkit.lab import registry
from mptcpkit.lab.backends import nsutil


def status_rows() -> list[dict[str, Any]]:
    """Rows for every recorded lab, oldest first; stale VM records (dead supervisor) are dropped first."""
    from mptcpkit.lab.backends.vm.detached import VM_BACKENDS, vm_lab_list

    vm_lab_list()
    rows = []
    for record in registry.all_records():
        if record.backend in VM_BACKENDS:
            kernel = record.details.get("release") or record.details.get("kernel", "")
            hosts = {h: f"VM {kernel}" for h in record.hosts}
            state = record.state
        else:
            hosts = dict(record.namespaces)
            alive = all(nsutil.netns_inode(ns) is not None for ns in record.all_netns)
            state = record.state if alive else "broken"
        rows.append(
            {
                "lab_id": record.lab_id,
                "topology": record.topology,
                "backend": record.backend,
                "state": state,
                "hosts": hosts,
                "emulation": record.emulation.get("mode", record.emulation.get("kind", "?")),
                "age_s": round(time.time() - record.created_at),
            }
        )
    return rows
