"""Finding QEMU, virtme-ng and the kernel under test, staging its modules, and choosing KVM or TCG."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.lab.backends.vm import argv as vm_argv
from mptcpkit.lab.backends.vm import state
from mptcpkit.lab.backends.vm.argv import Accel
from mptcpkit.lab.backends.vm.state import kill_group

PROBE_TIMEOUT_S = 10.0

AccelChoice = Literal["auto", "kvm", "tcg"]


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

    Cached per QEMU binary and kernel image in state.STATE_DIR, since a failing probe costs `timeout` seconds.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm is missing"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible (add the user to group kvm)"
    cache = state.STATE_DIR / "kvm-probe.json"
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
    kill_group(proc)
    proc.stdout.close()
    ok = vm_argv.kvm_probe_verdict(console.decode(errors="replace"), exited)
    seconds = time.monotonic() - started
    reason = (
        f"KVM probe booted the kernel in {seconds:.1f} s"
        if ok
        else f"KVM probe: kernel showed no sign of life within {timeout:.0f} s under KVM"
    )
    with contextlib.suppress(OSError):
        state.STATE_DIR.mkdir(parents=True, exist_ok=True)
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
