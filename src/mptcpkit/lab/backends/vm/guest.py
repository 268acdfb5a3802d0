"""One guest: boot a kernel under test with virtme-ng and run one command inside it.

The guest shares this machine's root file system read-only (tmpfs overlays make /etc, /tmp... writable
inside), so the same Python and the same mptcpkit run there: the lab's namespace backend and runner run
*inside* the guest, against the kernel under test, and their output comes back through a shared directory.
KVM is used when it can boot a kernel here (checked once by a bare probe boot and cached), TCG otherwise; the
choice is recorded.

A guest never outlives its caller (see `state.py`): QEMU runs in its own process group, killed on every exit
path (exception, Ctrl-C, SIGTERM, timeout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.backends.vm import argv as vm_argv
from mptcpkit.lab.backends.vm import state
from mptcpkit.lab.backends.vm.argv import Accel
from mptcpkit.lab.backends.vm.kernel import (
    AccelChoice,
    StagedKernel,
    choose_accel,
    default_kernel,
    find_qemu,
    find_virtme_run,
    stage_kernel,
)
from mptcpkit.lab.backends.vm.state import NAME_PREFIX, kill_group, sigterm_raises, start_time


@dataclass
class VmInfo:
    """What is recorded about a guest run (stored with results: which kernel, how it was virtualised)."""

    accel: Accel
    accel_reason: str
    kernel_image: str
    kernel_release: str
    kernel_label: str
    modules: str | None
    modules_loaded: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    run_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VmRunResult(NamedTuple):
    """The outcome of `run_in_vm`; unpacks as (returncode, stdout, stderr, vm_info)."""

    returncode: int
    stdout: str
    stderr: str
    vm_info: dict[str, Any]


# --- running a command in a guest ---------------------------------------------------------------------------


def guest_python_argv() -> list[str]:
    """argv prefix running this very Python (and its mptcpkit) inside the guest: the host root is shared."""
    return [sys.executable]


class Guest:
    """One virtme-ng guest running one command: start, wait for boot, wait for the end, always clean up.

    `run_in_vm` runs a command to completion with it; `VmBackend` keeps it running an agent for a whole lab.
    """

    def __init__(
        self,
        kernel: Path | None,
        modules: Path | None,
        argv_inside: Sequence[str],
        *,
        timeout: float,
        accel: AccelChoice = "auto",
        label: str | None = None,
        env: Mapping[str, str] | None = None,
        outdir: Path | None = None,
        cpus: int = 2,
        memory: str = "1G",
        kernel_args: Sequence[str] = (),
        extra_qemu_opts: Sequence[str] = (),
    ) -> None:
        if not argv_inside:
            raise UsageError("no command to run in the VM")
        self.qemu = find_qemu()
        self.virtme_run = find_virtme_run()
        self.kernel = Path(kernel) if kernel is not None else default_kernel()
        self.modules = modules
        self.argv_inside = list(argv_inside)
        self.timeout = timeout
        self.accel_choice: AccelChoice = accel
        self.label = label
        self.env = dict(env or {})
        self.outdir = outdir
        self.cpus = cpus
        self.memory = memory
        self.kernel_args = tuple(kernel_args)
        self.extra_qemu_opts = tuple(extra_qemu_opts)
        self.name = NAME_PREFIX + uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=self.name + "-", dir=state.WORK_PARENT))
        self.share = self.workdir / "share"
        self.console_path = self.workdir / "console.log"
        self.state_file = state.STATE_DIR / f"{self.name}.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.staged: StagedKernel | None = None
        self.accel: Accel = "tcg"
        self.accel_reason = ""
        self.started = 0.0
        self.boot_seconds = 0.0

    def start(self) -> None:
        """Check kernel/modules, choose KVM or TCG, launch virtme-run in its own process group."""
        staged = self.staged = stage_kernel(self.kernel, self.modules, self.workdir)
        self.accel, self.accel_reason = choose_accel(self.qemu, staged.image, self.accel_choice)
        self.share.mkdir()
        guest_env = {
            "MPTCPKIT_KERNEL_LABEL": self.label or staged.release or self.kernel.name,
            "MPTCPKIT_VM_ACCEL": self.accel,
            "MPTCPKIT_VM": self.name,
            "PYTHONUNBUFFERED": "1",
            **({"MPTCPKIT_VM_OUTDIR": str(self.outdir)} if self.outdir is not None else {}),
            **self.env,
        }
        config = vm_argv.VmConfig(
            kernel=staged.image,
            share_dir=self.share,
            # The kernel command line (which carries virtme's script) is limited to 2 KiB: pass a short
            # command that runs the real script from the shared directory.
            script=f"sh {self.share / vm_argv.SCRIPT_FILE}",
            name=self.name,
            accel=self.accel,
            cpus=self.cpus,
            memory=self.memory,
            pidfile=self.workdir / "qemu.pid",
            extra_rwdirs=(self.outdir,) if self.outdir is not None else (),
            kernel_args=self.kernel_args,
            virtme_run=self.virtme_run,
            qemu=self.qemu,
            extra_qemu_opts=self.extra_qemu_opts,
        )
        (self.share / vm_argv.SCRIPT_FILE).write_text(
            vm_argv.guest_script(self.argv_inside, self.share, env=guest_env, timeout_s=self.timeout)
        )
        argv = vm_argv.virtme_run_argv(config)
        path_env = os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
        )
        with self.console_path.open("wb") as console:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
                cwd="/",
                env={**os.environ, "PATH": path_env},
            )
        state.STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps(
                {
                    "name": self.name,
                    "pgid": self.proc.pid,
                    "pidfile": str(config.pidfile),
                    "workdir": str(self.workdir),
                    "owner": os.getpid(),
                    "owner_start": start_time(os.getpid()),
                    "kernel": str(self.kernel),
                    "started": time.time(),
                }
            )
        )
        self._console = _ConsoleWatch(self.console_path)

    def check(self, booted: bool) -> int | None:
        """Raise on a kernel panic; return virtme-run's exit code once it ended."""
        assert self.proc is not None
        panic = self._console.panic()
        if panic:
            kill_group(self.proc)
            stage = "while running the command" if booted else "while booting"
            raise LabError(f"the guest kernel panicked {stage} ({panic})\n" + self.console_excerpt())
        return self.proc.poll()

    def wait_booted(self, boot_timeout: float, ready: Callable[[], bool] | None = None) -> float:
        """Wait until the guest script started (and `ready()` holds); returns the boot time in seconds."""
        assert self.proc is not None and self.staged is not None
        while True:
            now = time.monotonic() - self.started
            if (self.share / vm_argv.RELEASE_FILE).exists() and (ready is None or ready()):
                self.boot_seconds = now
                return now
            code = self.check(booted=False)
            if code is not None:
                hint = ""
                if self.staged.modules is None:
                    hint = f"\n(no modules found for this kernel: {self.staged.modules_source}; try --modules DIR)"
                raise LabError(
                    f"the guest did not boot (virtme-run exited with {code}){hint}\n" + self.console_excerpt()
                )
            if now > boot_timeout:
                kill_group(self.proc)
                raise LabError(
                    f"the guest did not boot within {boot_timeout:.0f} s\n" + self.console_excerpt()
                )
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the guest to power off; returns virtme-run's exit code."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.check(booted=True)
            if code is not None:
                return code
            if time.monotonic() > deadline:
                assert self.proc is not None
                kill_group(self.proc)
                raise LabError(
                    f"the guest command did not finish within {self.timeout:.0f} s\n" + self.console_excerpt()
                )
            time.sleep(0.2)

    @property
    def release(self) -> str:
        return _read_text(self.share / vm_argv.RELEASE_FILE).strip()

    def info(self) -> VmInfo:
        assert self.staged is not None
        staged = self.staged
        return VmInfo(
            accel=self.accel,
            accel_reason=self.accel_reason,
            kernel_image=str(self.kernel),
            kernel_release=self.release,
            kernel_label=self.label or self.release,
            modules=str(staged.modules) if staged.modules is not None else staged.modules_source,
            modules_loaded=_read_lines(self.share / vm_argv.MODULES_FILE),
            boot_seconds=round(self.boot_seconds, 2),
            run_seconds=round(time.monotonic() - self.started - self.boot_seconds, 2),
            warnings=list(staged.warnings),
        )

    def console_excerpt(self) -> str:
        return _console_excerpt(self.console_path)

    def close(self) -> None:
        """Kill the process group (if still there), forget the state file, remove the work directory."""
        if self.proc is not None:
            kill_group(self.proc)
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_in_vm(
    kernel: Path | None,
    modules: Path | None,
    argv_inside: Sequence[str],
    *,
    timeout: float = 1800.0,
    boot_timeout: float = 300.0,
    **options: Any,
) -> VmRunResult:
    """Boot `kernel` (default: the distribution kernel) and run `argv_inside` as root inside it.

    `options` are `Guest`'s: accel, label, env, outdir, cpus, memory, kernel_args, extra_qemu_opts.
    Returns the command's exit code, stdout and stderr, and `vm_info` (accel, kernel_release, kernel_label,
    boot_seconds, ...). `outdir`, if given, is shared read-write at the same path (results files); its path
    is in the guest's $MPTCPKIT_VM_OUTDIR. The guest also sees $MPTCPKIT_KERNEL_LABEL and $MPTCPKIT_VM_ACCEL.
    Raises EnvironmentProblem (QEMU/virtme-ng missing), UsageError (kernel/modules missing), LabError (boot
    failure or timeout, with the tail of the kernel console).
    """
    guest = Guest(kernel, modules, argv_inside, timeout=timeout, **options)
    try:
        with sigterm_raises():
            guest.start()
            guest.wait_booted(boot_timeout)
            guest.wait_exit(timeout + 60)
        rc_path = guest.share / vm_argv.RC_FILE
        if not rc_path.exists():
            raise LabError(
                f"the guest ({guest.release}) stopped before the command finished (kernel crash or OOM?)\n"
                + guest.console_excerpt()
            )
        return VmRunResult(
            int(rc_path.read_text().strip() or 255),
            _read_text(guest.share / vm_argv.STDOUT_FILE),
            _read_text(guest.share / vm_argv.STDERR_FILE),
            guest.info().as_dict(),
        )
    finally:
        guest.close()


class _ConsoleWatch:
    """Reads only what was appended to the console log since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tail = ""

    def panic(self) -> str | None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return None
        self.offset += len(chunk)
        text = self.tail + chunk.decode(errors="replace")
        self.tail = text[-200:]
        return vm_argv.find_panic(text)


def _console_excerpt(path: Path) -> str:
    tail = vm_argv.console_tail(_read_text(path))
    return "last lines of the guest console:\n" + (tail or "(empty)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _read_lines(path: Path) -> list[str]:
    return [line for line in _read_text(path).splitlines() if line.strip()]
