"""`mptcpkit lab run --kernel IMAGE`: run the suite inside a guest booted on the kernel under test, then store the
run in this machine's results database tagged with the guest's kernel release and a kernel label.

The guest runs the same runner on the same scenarios (its namespaces, its kernel, netem where that kernel has
it); only the results come back, as the runner's JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from mptcpkit.errors import LabError
from mptcpkit.lab.store import Result, open_store, run_to_json


def run_on_kernel(
    kernel: str,
    modules: Path | None,
    guest_args: list[str],
    *,
    label: str | None,
    db: str | None,
    json_path: str | None,
) -> int:
    """Boot `kernel` ('default' = the distribution kernel), run the lab there, store the run here."""
    from mptcpkit.lab.backends import vm
    from mptcpkit.lab.runview import print_results

    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 130
    image = vm.default_kernel() if kernel == "default" else Path(kernel)
    console.print(
        f"booting {image} in a VM (QEMU; KVM if it works, else TCG: slow but real)", highlight=False
    )
    outcome = vm.run_lab_in_vm(image, modules, guest_args, label=label)
    info = outcome.vm_info
    if outcome.run is None:
        tail = "\n".join((outcome.stderr or outcome.stdout).strip().splitlines()[-15:])
        raise LabError(
            f"the lab run inside the VM ({info.get('kernel_release', '?')}, {info.get('accel', '?')}) "
            f"stored no results (exit {outcome.returncode}):\n{tail}"
        )
    guest = outcome.run
    environment: dict[str, Any] = dict(guest.get("environment") or {})
    environment.update(
        backend="vm",
        kernel_release=info.get("kernel_release", environment.get("kernel_release")),
        kernel_label=info.get("kernel_label") or label,
        vm=info,
        guest_run_id=guest.get("run_id"),
    )
    config = dict(guest.get("config") or {})
    config["kernel_image"] = str(image)
    with open_store(db) as store:
        run = store.create_run(label or info.get("kernel_label"), environment, config)
        results = []
        for item in guest.get("results", []):
            result = Result(
                run_id=run.run_id,
                scenario=item["scenario"],
                metric=item["metric"],
                unit=item["unit"],
                direction=item["direction"],
                samples=list(item["samples"]),
                expected=item.get("expected"),
                score=item.get("score"),
                passed=bool(item.get("passed")),
                rule=item.get("rule", ""),
                details=item.get("details") or {},
            )
            store.add_result(result)
            results.append(result)
        from mptcpkit.lab.profiling.storage import import_profiles

        import_profiles(store, run.run_id, guest.get("profiles") or [])  # `--profile` in the guest
        store.finish_run(run.run_id, "complete" if guest.get("status") == "complete" else "incomplete")
        console.print(
            f"guest kernel {info.get('kernel_release')} ({info.get('accel')}, booted in "
            f"{info.get('boot_seconds', 0):.0f} s); run stored as [bold]{run.run_id}[/] in {store.where}",
            highlight=False,
        )
        print_results(results, console)
        if json_path:
            document = json.dumps(run_to_json(store, run.run_id), indent=2, default=str)
            if json_path == "-":
                sys.stdout.write(document + "\n")
            else:
                Path(json_path).write_text(document + "\n")
    return outcome.returncode
