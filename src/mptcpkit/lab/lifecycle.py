"""Labs across backends (namespaces, VMs): what runs on this machine, and tearing one (or all) down.

`lab status` and `lab down` print what these return; the backends do the actual building and removal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mptcpkit.errors import UsageError


def status_rows() -> list[dict[str, Any]]:
    """One row per running lab (namespace and VM labs share the one registry), ready for a table or JSON."""
    from mptcpkit.lab.backends.lab_status import status_rows as rows

    return rows()


def down(lab_id: str | None, all_labs: bool, say: Callable[[str], None]) -> None:
    """Remove one lab (namespace or VM lab, also a half-built or unreadable one) or, with `all_labs`, every lab.

    `say` gets one line per thing removed; bad input is a UsageError.
    """
    from mptcpkit.lab import registry
    from mptcpkit.lab.backends.netns import preflight, teardown_all, teardown_record
    from mptcpkit.lab.backends.vm.detached import vm_lab_down, vm_lab_list

    if lab_id and not registry.LAB_ID_RE.fullmatch(lab_id):
        raise UsageError(f"{lab_id[:40]!a} is not a lab id (6 hex digits, see `mptcpkit lab status`)")
    if lab_id and not all_labs and vm_lab_down(lab_id):
        say(f"VM lab {lab_id} removed")
        return
    preflight()
    if all_labs:
        from mptcpkit.lab.backends.vm.state import cleanup_vms

        for vm_lab in vm_lab_list():
            vm_lab_down(vm_lab.lab_id)

        guests = cleanup_vms(include_live_owners=True)
        if guests:
            say(f"stopped {len(guests)} VM(s): {', '.join(guests)}")
        removed = teardown_all()
        say(f"removed {len(removed)} lab(s){': ' + ', '.join(removed) if removed else ''}")
        return
    if not lab_id:
        raise UsageError("name the lab to remove (see `mptcpkit lab status`) or use --all")
    record = registry.find(lab_id)  # also a corrupt record, or namespaces whose record was never written
    if record is None:  # (an unreadable VM lab record is read as a corrupt record above, and removed)
        raise UsageError(f"no lab '{lab_id}' on this machine (see `mptcpkit lab status`)")
    teardown_record(record)
    say(f"lab {lab_id} removed")
