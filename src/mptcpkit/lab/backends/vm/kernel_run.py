"""`mptcpkit lab run --kernel IMAGE`: run the suite inside a guest booted on the kernel under test, then store the
run in this machine's results database tagged with the guest's kernel release and a kernel label.

The guest runs the same `lab run` on the same scenarios (its namespaces, its kernel, netem where that kernel has
it). The run's options go in as data: the host writes the command's values as JSON (`command_options`), the guest
calls the same command function with them (`call_with_options`, here as `python -m ...kernel_run`); no flag is
rendered twice. Only the results come back, as the runner's JSON, or the error, as `error_codec` JSON.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mptcpkit.errors import LabError, MptcpkitError, UsageError
from mptcpkit.lab.backends.vm import state
from mptcpkit.lab.backends.vm.guest import guest_python_argv, run_in_vm
from mptcpkit.lab.backends.vm.kernel import AccelChoice, default_kernel
from mptcpkit.lab.backends.vm.state import NAME_PREFIX
from mptcpkit.lab.error_codec import error_from_json, error_to_json
from mptcpkit.lab.store import Result, open_store

# `lab run` parameters that only mean something on this machine: the guest never gets them.
HOST_ONLY = frozenset({"kernel", "modules", "db", "json_path", "ssh", "known_hosts", "identity", "list_only"})
GUEST_DB = "/tmp/mptcpkit-vm-results.sqlite"  # the guest's /tmp is a guest-only tmpfs
OPTIONS_FILE, RUN_FILE, ERROR_FILE = "options.json", "run.json", "error.json"


def command_options(command: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `command`'s parameters that the guest's run gets, as JSON-able data."""
    names = inspect.signature(command).parameters
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in values.items()
        if name in names and name not in HOST_ONLY
    }


def call_with_options(command: Callable[..., Any], options: Mapping[str, Any], **overrides: Any) -> Any:
    """Call a typer command function with `options`; every other parameter takes its declared default."""
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(command).parameters.items():
        default = parameter.default
        kwargs[name] = getattr(default, "default", default)  # typer.Option(...) keeps it in .default
    unknown = sorted(set(options) - set(kwargs))
    if unknown:
        raise UsageError(f"the guest's mptcpkit does not know the run options {', '.join(unknown)}")
    kwargs.update(options)
    kwargs.update(overrides)
    return command(**kwargs)


@dataclass
class VmLabRun:
    """A `lab run` done inside a guest: the run as the runner wrote it (JSON), and how the guest ran."""

    returncode: int
    run: dict[str, Any] | None
    error: dict[str, Any] | None
    stdout: str
    stderr: str
    vm_info: dict[str, Any]


def run_on_kernel(
    kernel: str,
    modules: Path | None,
    options: Mapping[str, Any],
    *,
    label: str | None,
    db: str | None,
    json_path: str | None,
) -> int:
    """Boot `kernel` ('default' = the distribution kernel), run the lab there, store the run here."""
    from mptcpkit.lab.runview import print_results, write_run_json

    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 130
    image = default_kernel() if kernel == "default" else Path(kernel)
    console.print(
        f"booting {image} in a VM (QEMU; KVM if it works, else TCG: slow but real)", highlight=False
    )
    outcome = run_lab_in_vm(image, modules, options, label=label)
    info = outcome.vm_info
    if outcome.error is not None:
        raise error_from_json(outcome.error)
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
            write_run_json(store, run.run_id, json_path)
    return outcome.returncode


def run_lab_in_vm(
    kernel: Path | None,
    modules: Path | None,
    options: Mapping[str, Any],
    *,
    label: str | None = None,
    timeout: float = 3600.0,
    accel: AccelChoice = "auto",
) -> VmLabRun:
    """Run `mptcpkit lab run` with `options` (see `command_options`) inside a guest booted on `kernel`.

    The guest stores into a private SQLite file and writes the run as JSON (or its error, see `error_codec`)
    into a shared directory; the caller stores that run in the real results database, tagged with `vm_info`
    (kernel release, label, accel). The exit code is the runner's (0 pass, 1 a scenario failed, 2 bad input).
    """
    forbidden = sorted(set(options) & HOST_ONLY)
    if forbidden:
        raise UsageError(
            f"{', '.join(forbidden)} are chosen by the VM backend; leave them out of the options"
        )
    options = dict(options)
    if label is not None and not options.get("label"):
        options["label"] = label
    outdir = Path(tempfile.mkdtemp(prefix=NAME_PREFIX + "out-", dir=state.WORK_PARENT))
    try:
        (outdir / OPTIONS_FILE).write_text(json.dumps(options))
        argv = [*guest_python_argv(), "-m", __name__, str(outdir)]
        result = run_in_vm(kernel, modules, argv, timeout=timeout, accel=accel, label=label, outdir=outdir)
        run: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            run = json.loads((outdir / RUN_FILE).read_text())
        with contextlib.suppress(OSError, ValueError):
            error = json.loads((outdir / ERROR_FILE).read_text())
        return VmLabRun(result.returncode, run, error, result.stdout, result.stderr, result.vm_info)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def guest_main(outdir: Path) -> int:
    """Inside the guest: `lab run` with the host's options; the run (or the error) goes to `outdir`."""
    import typer

    from mptcpkit.lab.cli.run import run_cmd

    options = json.loads((outdir / OPTIONS_FILE).read_text())
    try:
        call_with_options(run_cmd, options, db=GUEST_DB, json_path=str(outdir / RUN_FILE))
    except typer.Exit as exc:
        return int(exc.exit_code)
    except MptcpkitError as exc:
        (outdir / ERROR_FILE).write_text(json.dumps(error_to_json(exc)))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug in the guest's run: the host still gets one message, not a traceback
        (outdir / ERROR_FILE).write_text(json.dumps(error_to_json(exc, where="guest run")))
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(guest_main(Path(sys.argv[1])))
