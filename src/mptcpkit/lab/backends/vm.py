"""VM backend, single-VM mode: boot a kernel under test with virtme-ng and run a command inside it.

The guest shares this machine's root file system read-only (tmpfs overlays make /etc, /tmp... writable
inside), so the same Python and the same mptcpkit run there: the lab's namespace backend and runner run
*inside* the guest, against the kernel under test, and their output comes back through a shared directory.
KVM is used when it can boot a kernel here (checked once by a bare probe boot and cached), TCG otherwise; the
choice is recorded.

A guest never outlives its caller: QEMU runs in its own process group, killed on every exit path (exception,
Ctrl-C, SIGTERM, timeout); a state file under /run/mptcpkit/vm lets `cleanup_vms()` find a guest left by a
process killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mptcpkit.errors import EnvironmentProblem, LabError, UsageError
from mptcpkit.lab.backends import vm_argv
from mptcpkit.lab.backends.vm_argv import Accel

STATE_DIR = Path("/run/mptcpkit/vm")
WORK_PARENT = Path("/tmp")  # visible inside the guest (the host root is its lower layer)
NAME_PREFIX = "mkt-vm-"
PROBE_TIMEOUT_S = 10.0

AccelChoice = Literal["auto", "kvm", "tcg"]


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


# --- finding the tools and the kernel -----------------------------------------------------------------------


def find_qemu() -> str:
    """The QEMU system emulator for this architecture, or EnvironmentProblem."""
    machine = platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    path = shutil.which(f"qemu-system-{arch}")
    if path is None:
        raise EnvironmentProblem(
            f"QEMU is missing: no qemu-system-{arch} in PATH",
            hint="apt-get install qemu-system-x86 (Debian/Ubuntu) or dnf install qemu-system-x86",
        )
    return path


def find_virtme_run() -> str:
    """virtme-run from the virtme-ng package installed beside this Python, else from PATH."""
    beside = Path(sys.executable).parent / "virtme-run"
    if beside.exists():
        return str(beside)
    path = shutil.which("virtme-run")
    if path is None:
        raise EnvironmentProblem(
            "virtme-ng is missing (no virtme-run)", hint="pip install virtme-ng==1.42 (in mptcpkit's venv)"
        )
    return path


def kernel_release(image: Path) -> str | None:
    """The release string of a kernel image (bzImage header), None when the format is not recognised."""
    with image.open("rb") as f:
        return vm_argv.read_bzimage_release(f.read(0x10000))


def default_kernel() -> Path:
    """The newest distribution kernel in /boot that has its modules installed (linux-image-amd64)."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for image in Path("/boot").glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release).is_dir():
            key = tuple(int(n) for n in re.findall(r"\d+", release))
            found.append((key, image))
    if not found:
        raise EnvironmentProblem(
            "no kernel image with modules in /boot to boot in a VM",
            hint="apt-get install linux-image-amd64, or pass --kernel path/to/bzImage",
        )
    return max(found)[1]


@dataclass(frozen=True, slots=True)
class StagedKernel:
    """The kernel as virtme-run is given it, and what we know about it."""

    image: Path
    """What virtme-run boots (the user's image, or a symlink beside a staged lib/modules)."""
    release: str | None
    modules: Path | None
    modules_source: str
    warnings: tuple[str, ...] = ()


def _in_build_tree(image: Path) -> bool:
    parts = image.resolve().parts
    return parts[-4:] == ("arch", "x86", "boot", "bzImage") and (Path(*parts[:-4]) / ".config").exists()


def stage_kernel(kernel: Path, modules: Path | None, workdir: Path) -> StagedKernel:
    """Check the kernel image and modules exist and lay them out where virtme-run looks for them.

    virtme-run finds modules by walking up from the image to a `lib/modules/<release>`; for `--modules DIR` we
    give it a symlinked image beside a symlinked `lib/modules/<release>` in the work directory.
    """
    if not kernel.exists():
        raise UsageError(f"kernel image {kernel} does not exist")
    if not kernel.is_file():
        raise UsageError(
            f"kernel image {kernel} is not a file (give the bzImage, e.g. arch/x86/boot/bzImage)"
        )
    release = kernel_release(kernel)
    if modules is None:
        if release is not None and (Path("/lib/modules") / release).is_dir():
            return StagedKernel(kernel, release, Path("/lib/modules") / release, "host /lib/modules")
        if _in_build_tree(kernel):
            return StagedKernel(kernel, release, None, "kernel build tree (virtme-prep-kdir-mods)")
        warning = (
            f"no modules found for kernel {release or '(unknown release)'}: "
            "only built-in features are available"
            " (pass --modules DIR after `make modules_install INSTALL_MOD_PATH=DIR`)"
        )
        return StagedKernel(kernel, release, None, "none", (warning,))
    if not modules.is_dir():
        raise UsageError(f"modules directory {modules} does not exist")
    listing: dict[Path, list[str]] = {}
    for candidate in (modules / "lib" / "modules", modules / "usr" / "lib" / "modules", modules):
        with contextlib.suppress(OSError):
            listing[candidate] = sorted(os.listdir(candidate))
    moddir = vm_argv.find_module_dir(modules, release, listing)
    if moddir is None:
        raise UsageError(
            f"no kernel modules for release {release or '?'} under {modules}",
            hint=f"expected {modules}/lib/modules/{release or '<release>'}, as "
            f"`make modules_install INSTALL_MOD_PATH={modules}` creates",
        )
    mod_release = moddir.name
    if release is not None and mod_release != release:
        raise UsageError(f"modules in {moddir} are for kernel {mod_release}, but {kernel} is {release}")
    stage = workdir / "kernel"
    (stage / "lib" / "modules").mkdir(parents=True, exist_ok=True)
    (stage / "vmlinuz").symlink_to(kernel.resolve())
    (stage / "lib" / "modules" / mod_release).symlink_to(moddir.resolve())
    return StagedKernel(stage / "vmlinuz", release or mod_release, moddir, str(moddir))


# --- KVM or TCG ---------------------------------------------------------------------------------------------


def _probe_cache_key(qemu: str, kernel: Path) -> str:
    qst, kst = os.stat(qemu), kernel.resolve().stat()
    return f"{qemu}:{qst.st_mtime_ns}:{kernel.resolve()}:{kst.st_size}:{kst.st_mtime_ns}"


def probe_kvm(qemu: str, kernel: Path, *, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Can KVM boot this kernel here? Boots it bare (no root fs) under KVM and watches the serial console.

    Cached per QEMU binary and kernel image in STATE_DIR, since a failing probe costs `timeout` seconds.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm is missing"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible (add the user to group kvm)"
    cache = STATE_DIR / "kvm-probe.json"
    key = _probe_cache_key(qemu, kernel)
    cached: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
    if key in cached:
        ok, reason = cached[key]
        return bool(ok), f"{reason} (cached probe)"
    started = time.monotonic()
    proc = subprocess.Popen(
        vm_argv.kvm_probe_argv(qemu, kernel),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    console = b""
    exited = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() - started < timeout:
            if sel.select(0.2):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    exited = proc.wait(timeout=5) is not None
                    break
                console += chunk
                if vm_argv.kvm_probe_verdict(console.decode(errors="replace"), False):
                    break
    _kill_group(proc)
    proc.stdout.close()
    ok = vm_argv.kvm_probe_verdict(console.decode(errors="replace"), exited)
    seconds = time.monotonic() - started
    reason = (
        f"KVM probe booted the kernel in {seconds:.1f} s"
        if ok
        else f"KVM probe: kernel showed no sign of life within {timeout:.0f} s under KVM"
    )
    with contextlib.suppress(OSError):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        cached[key] = [ok, reason]
        cache.write_text(json.dumps(cached, indent=1))
    return ok, reason


def choose_accel(qemu: str, kernel: Path, accel: AccelChoice) -> tuple[Accel, str]:
    """KVM or TCG, with the reason recorded."""
    if accel == "tcg":
        return "tcg", "TCG requested"
    ok, reason = probe_kvm(qemu, kernel)
    if ok:
        return "kvm", reason
    if accel == "kvm":
        raise EnvironmentProblem(
            f"KVM requested but it cannot boot this kernel here: {reason}", hint="use TCG"
        )
    return "tcg", reason


# --- process groups and state files -------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM the whole process group of `proc` (virtme-run and its QEMU), SIGKILL after `grace`."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of an exited leader
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int, name: str) -> bool:
    """True when `pid` is a virtme-run or QEMU process started for the guest called `name`."""
    argv = _cmdline(pid)
    return name in argv or any(arg.startswith(f"guest={name}") or arg == name for arg in argv)


def cleanup_vms(*, include_live_owners: bool = False) -> list[str]:
    """Kill guests whose owner died (kill -9) and remove their files; returns the guest names cleaned.

    Only processes whose command line carries a guest name recorded in a state file are touched; guests of a
    process that still runs are left alone unless `include_live_owners` (for `lab down --all`).
    """
    cleaned: list[str] = []
    for state_file in sorted(STATE_DIR.glob(f"{NAME_PREFIX}*.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state_file.unlink(missing_ok=True)
            continue
        name = str(state.get("name", ""))
        owner = int(state.get("owner", 0))
        if not include_live_owners and owner and _start_time(owner) == state.get("owner_start"):
            continue  # its owner still runs and will clean up itself
        for pid in (int(state.get("pgid", 0)), _read_pid(Path(str(state.get("pidfile", ""))))):
            if pid and _is_ours(pid, name):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pid == int(state.get("pgid", 0)):
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)
        for link in state.get("links", []):  # multi-VM mode: TAPs and bridges on this machine
            if str(link).startswith("mk"):
                subprocess.run(["ip", "link", "del", str(link)], capture_output=True, check=False)
        workdir = Path(str(state.get("workdir", "")))
        if workdir.name.startswith(NAME_PREFIX):
            shutil.rmtree(workdir, ignore_errors=True)
        state_file.unlink(missing_ok=True)
        cleaned.append(name)
    return cleaned


def running_vms() -> list[dict[str, Any]]:
    """State of the guests started by mptcpkit that are still recorded (for `lab status`)."""
    states = []
    for state_file in sorted(STATE_DIR.glob(f"{NAME_PREFIX}*.json")):
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads(state_file.read_text()))
    return states


def _start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while a guest runs, so `finally` blocks kill it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        self.workdir = Path(tempfile.mkdtemp(prefix=self.name + "-", dir=WORK_PARENT))
        self.share = self.workdir / "share"
        self.console_path = self.workdir / "console.log"
        self.state_file = STATE_DIR / f"{self.name}.json"
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
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps(
                {
                    "name": self.name,
                    "pgid": self.proc.pid,
                    "pidfile": str(config.pidfile),
                    "workdir": str(self.workdir),
                    "owner": os.getpid(),
                    "owner_start": _start_time(os.getpid()),
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
            _kill_group(self.proc)
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
                _kill_group(self.proc)
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
                _kill_group(self.proc)
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
            _kill_group(self.proc)
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_in_vm(
    kernel: Path | None,
    modules: Path | None,
    argv_inside: Sequence[str],
    *,
    timeout: float = 1800.0,
    boot_timeout: float = 300.0,
    accel: AccelChoice = "auto",
    label: str | None = None,
    env: Mapping[str, str] | None = None,
    outdir: Path | None = None,
    cpus: int = 2,
    memory: str = "1G",
    kernel_args: Sequence[str] = (),
) -> VmRunResult:
    """Boot `kernel` (default: the distribution kernel) and run `argv_inside` as root inside it.

    Returns the command's exit code, stdout and stderr, and `vm_info` (accel, kernel_release, kernel_label,
    boot_seconds, ...). `outdir`, if given, is shared read-write at the same path (results files); its path
    is in the guest's $MPTCPKIT_VM_OUTDIR. The guest also sees $MPTCPKIT_KERNEL_LABEL and $MPTCPKIT_VM_ACCEL.
    Raises EnvironmentProblem (QEMU/virtme-ng missing), UsageError (kernel/modules missing), LabError (boot
    failure or timeout, with the tail of the kernel console).
    """
    guest = Guest(
        kernel,
        modules,
        argv_inside,
        timeout=timeout,
        accel=accel,
        label=label,
        env=env,
        outdir=outdir,
        cpus=cpus,
        memory=memory,
        kernel_args=kernel_args,
    )
    try:
        with _sigterm_raises():
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


@dataclass
class VmLabRun:
    """A `lab run` done inside a guest: the run as the runner wrote it (JSON), and how the guest ran."""

    returncode: int
    run: dict[str, Any] | None
    stdout: str
    stderr: str
    vm_info: dict[str, Any]


def run_lab_in_vm(
    kernel: Path | None,
    modules: Path | None,
    lab_run_args: Sequence[str],
    *,
    label: str | None = None,
    timeout: float = 3600.0,
    accel: AccelChoice = "auto",
) -> VmLabRun:
    """Run `mptcpkit lab run LAB_RUN_ARGS` inside a guest booted on `kernel` and bring the run back as JSON.

    The guest stores into a private SQLite file (its /tmp is a guest-only tmpfs) and writes the run as JSON into
    a shared directory; the caller stores that run in the real results database, tagged with `vm_info`
    (kernel release, label, accel). Pass scenario/repetition/emulation options in `lab_run_args`, not --db or
    --json. The exit code is the runner's (0 pass, 1 a scenario failed, 2 bad input).
    """
    for forbidden in ("--db", "--json"):
        if forbidden in lab_run_args:
            raise UsageError(
                f"{forbidden} is chosen by the VM backend; leave it out of the guest's arguments"
            )
    outdir = Path(tempfile.mkdtemp(prefix=NAME_PREFIX + "out-", dir=WORK_PARENT))
    try:
        out_json = outdir / "run.json"
        argv = [*guest_python_argv(), "-m", "mptcpkit", "lab", "run", *lab_run_args]
        argv += ["--db", "/tmp/mptcpkit-vm-results.sqlite", "--json", str(out_json)]
        if label is not None and "--label" not in lab_run_args and "-l" not in lab_run_args:
            argv += ["--label", label]
        result = run_in_vm(kernel, modules, argv, timeout=timeout, accel=accel, label=label, outdir=outdir)
        run: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            run = json.loads(out_json.read_text())
        return VmLabRun(result.returncode, run, result.stdout, result.stderr, result.vm_info)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
