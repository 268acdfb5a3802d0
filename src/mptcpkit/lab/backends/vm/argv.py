"""Pure builders for the VM backend: virtme-run and QEMU argv, the guest script, kernel-image facts.

Nothing here starts a process or touches the file system (except `read_bzimage_release`, which only reads
bytes it is given): the I/O lives in `kernel.py` and `guest.py`. virtme-ng's own `vng` joins its options into one shell string;
we call its `virtme-run` with an argv list instead, so paths and commands are never re-parsed by a shell on
the host.
"""

from __future__ import annotations

import re
import shlex
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Accel = Literal["kvm", "tcg"]

#: Directories virtme-ng overlays with a guest-private tmpfs so the guest can write there (vng's defaults).
OVERLAY_DIRS: tuple[str, ...] = ("/etc", "/lib", "/home", "/opt", "/srv", "/usr", "/var", "/tmp")

#: Modules the lab may need inside the guest; loaded best effort before the command runs (a kernel that has
#: them built in, or lacks them, is fine: missing ones are reported by the lab's own feature detection).
GUEST_MODULES: tuple[str, ...] = (
    "virtio_net",
    "veth",
    "sch_netem",
    "sch_tbf",
    "sch_htb",
    "sch_ingress",
    "ifb",
    "cls_u32",
    "cls_bpf",
    "act_mirred",
    "tun",
    "nf_tables",
)

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Files the guest script writes into the shared directory.
SCRIPT_FILE = "run.sh"
RELEASE_FILE = "release"  # written first: its appearance means "the guest booted"
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
RC_FILE = "rc"
MODULES_FILE = "modules"


@dataclass(frozen=True, slots=True)
class VmConfig:
    """Everything that decides how one guest is started."""

    kernel: Path
    """Kernel image as virtme-run should see it (possibly a staged symlink, see `kernel.stage_kernel`)."""
    share_dir: Path
    """Host directory shared read-write with the guest at the same path (results, stdout, stderr, rc)."""
    script: str
    """Shell script run by the guest's init (see `guest_script`)."""
    name: str
    """Guest host name and QEMU -name: lets a later cleanup recognise our QEMU processes."""
    accel: Accel = "tcg"
    cpus: int = 2
    memory: str = "1G"
    pidfile: Path | None = None
    """QEMU writes its pid here (-pidfile)."""
    extra_rwdirs: tuple[Path, ...] = ()
    kernel_args: tuple[str, ...] = ()
    virtme_run: str = "virtme-run"
    qemu: str | None = None
    extra_qemu_opts: tuple[str, ...] = field(default_factory=tuple)


def virtme_run_argv(config: VmConfig) -> list[str]:
    """argv for virtme-run: boot `config.kernel` over the host root (read-only + overlays), run the script.

    `--show-boot-console` sends the kernel console to virtme-run's stderr: the backend keeps it in a file and
    shows its tail when the boot fails.
    """
    argv = [config.virtme_run, "--kimg", str(config.kernel), "--mods", "auto", "--name", config.name]
    for directory in OVERLAY_DIRS:
        argv += ["--overlay-rwdir", directory]
    for shared in (config.share_dir, *config.extra_rwdirs):
        argv += ["--rwdir", str(shared)]
    argv += ["--cwd", "/", "--script-sh", config.script, "--show-boot-console"]
    argv += ["--cpus", str(config.cpus), "--memory", config.memory]
    for karg in config.kernel_args:
        argv += ["--kopt", karg]
    if config.accel == "tcg":
        argv.append("--disable-kvm")
    if config.qemu is not None:
        argv += ["--qemu-bin", config.qemu]
    qemu_opts: list[str] = []
    if config.pidfile is not None:
        qemu_opts += ["-pidfile", str(config.pidfile)]
    qemu_opts += list(config.extra_qemu_opts)
    if qemu_opts:
        # virtme-run's --qemu-opts takes the rest of the command line: it must come last.
        argv += ["--qemu-opts", *qemu_opts]
    return argv


def guest_script(
    argv_inside: Sequence[str],
    share_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    modules: Sequence[str] = GUEST_MODULES,
    cwd: str = "/",
    timeout_s: float | None = None,
) -> str:
    """The guest's shell script: mark the boot, load modules, run the command, keep its output and code.

    Output goes to files in the shared directory rather than virtio-serial, so the kernel console (virtme's
    stderr) stays separate from the command's own output and a crash cannot mix them. With `timeout_s` the
    guest stops the command itself, so a guest orphaned by a killed host process still powers off on its own.
    """
    if not argv_inside:
        raise ValueError("argv_inside must not be empty")
    share = shlex.quote(str(share_dir))
    exports = {"PATH": GUEST_PATH, **(env or {})}
    lines = [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
    lines.append(f"S={share}")
    lines.append(f'uname -r > "$S/{RELEASE_FILE}.tmp" && mv "$S/{RELEASE_FILE}.tmp" "$S/{RELEASE_FILE}"')
    if modules:
        names = " ".join(shlex.quote(m) for m in modules)
        lines.append(
            f'for m in {names}; do modprobe -q "$m" 2>/dev/null && echo "$m"; done > "$S/{MODULES_FILE}"'
        )
    lines.append(f"cd {shlex.quote(cwd)}")
    command = shlex.join(argv_inside)
    if timeout_s is not None:
        command = f"timeout -k 10 {max(1, int(timeout_s))} {command}"
    lines.append(f'{command} < /dev/null > "$S/{STDOUT_FILE}" 2> "$S/{STDERR_FILE}"')
    lines.append(f'echo $? > "$S/{RC_FILE}.tmp" && mv "$S/{RC_FILE}.tmp" "$S/{RC_FILE}"')
    lines.append("sync")
    return "\n".join(lines) + "\n"


# --- KVM probe ----------------------------------------------------------------------------------------------

PROBE_BANNER = "Linux version"
PROBE_DONE = ("Kernel panic", "VFS: Unable to mount root")


def kvm_probe_argv(qemu: str, kernel: Path) -> list[str]:
    """A bare QEMU boot under KVM with no root file system: a kernel that runs reaches the root-mount panic
    (and QEMU exits, -no-reboot + panic=-1) within a second or two; a broken KVM shows nothing at all."""
    return [
        qemu,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 loglevel=4",
    ]


def kvm_probe_verdict(console: str, exited: bool) -> bool:
    """True when the probe's console shows the kernel ran to the end of its early boot under KVM."""
    if PROBE_BANNER not in console:
        return False
    return exited or any(marker in console for marker in PROBE_DONE)


# --- kernel images and modules ------------------------------------------------------------------------------

_RELEASE_RE = re.compile(rb"^(\d+\.\d+[^\s\x00]*)")


def read_bzimage_release(header: bytes) -> str | None:
    """Kernel release ("6.1.0-56-amd64") from the first bytes of an x86 bzImage, or None.

    The boot protocol header has the magic "HdrS" at 0x202 and, at 0x20E, a pointer (minus 0x200) to the
    version string "6.1.0-56-amd64 (builder@host) #1 SMP ...".
    """
    if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
        return None
    (offset,) = struct.unpack_from("<H", header, 0x20E)
    start = offset + 0x200
    if offset == 0 or start >= len(header):
        return None
    match = _RELEASE_RE.match(header[start : start + 256])
    return match.group(1).decode("ascii", "replace") if match else None


def find_module_dir(modules: Path, release: str | None, listing: Mapping[Path, Sequence[str]]) -> Path | None:
    """Where the `<release>` modules tree is, given what the user passed as --modules.

    Accepted forms, as `make modules_install INSTALL_MOD_PATH=DIR` and distributions lay them out:
    DIR (holding lib/modules/<release> or usr/lib/modules/<release>), DIR = .../lib/modules, or DIR =
    .../lib/modules/<release> itself. `listing` maps each candidate directory to its entries (the caller reads
    the file system), so this choice stays pure. With an unknown release, a single release directory is taken.
    """
    candidates = [modules / "lib" / "modules", modules / "usr" / "lib" / "modules", modules]
    for parent in candidates:
        entries = listing.get(parent)
        if entries is None:
            continue
        is_tree = "modules.dep" in entries or "modules.order" in entries or "kernel" in entries
        if is_tree and (release is None or parent.name == release or parent == modules):
            return parent
        if release is not None and release in entries:
            return parent / release
        releases = [e for e in entries if re.match(r"^\d+\.\d+", e)]
        if release is None and len(releases) == 1:
            return parent / releases[0]
    return None


PANIC_MARKERS = ("Kernel panic - not syncing", "PANIC: early exception", "kernel BUG at")


def find_panic(console: str) -> str | None:
    """The console line that shows the guest kernel died, if any."""
    for line in console.splitlines():
        for marker in PANIC_MARKERS:
            if marker in line:
                return line[line.index(marker) :].strip()[:200]
    return None


def console_tail(text: str, lines: int = 25) -> str:
    """The last lines of a console log, with terminal escapes removed, for error messages."""
    clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc|\r", "", text)
    kept = [line for line in clean.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
