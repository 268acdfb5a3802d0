"""The VM backend: labs whose hosts run inside QEMU guests booted on a kernel under test (virtme-ng).

Modules, from the bottom up:

- `argv.py`       pure: virtme-run/QEMU argv, the guest's script, bzImage release, panic detection
- `state.py`      guest processes and their state files (a guest never outlives its owner), `cleanup_vms`
- `kernel.py`     finding QEMU, virtme-ng and the kernel; staging modules; KVM or TCG
- `guest.py`      one guest running one command (`Guest`, `run_in_vm`)
- `kernel_run.py` `lab run --kernel`: the run's options go in as JSON, the run (or error) comes back
- `agent.py`      inside a guest: serves the LabHost/Lab calls; `console.py`: the `lab console` shell
- `single.py`     `VmBackend`: one guest, the namespace backend inside it
- `multi.py`      `MultiVmBackend`: one guest per host, each host built from `lab/plan.py` like SSH machines
- `supervisor.py` the detached process keeping a VM lab up; `detached.py`: `lab up/down/console --kernel`

VM labs are recorded in the one lab registry (`lab/registry.py`) like namespace labs.
"""
