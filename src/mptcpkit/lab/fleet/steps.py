"""The ordered series a bisect searches: kernel images (a list file), a git range with a build command, or, as
the test and dry-run mode, "steps" that are variants of one scenario (a template with per-step variables).

A kernels file: one step per line, `LABEL PATH` or just `PATH` (the label is then the file name); `#` comments.
A steps file (TOML):

    template = "base.toml"            # a scenario file with $name placeholders (relative to the steps file)
    [[steps]]
    label = "k0"
    rate = "50mbit"                    # every other key is a variable of the template
"""

from __future__ import annotations

import shlex
import string
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mptcpkit.errors import UsageError


@dataclass(frozen=True)
class Step:
    label: str
    kernel: str | None = None  # image path on the workers
    scenario: str | None = None  # a generated scenario file (steps mode)
    build: list[str] = field(default_factory=list)  # git mode: the command that builds it (prints the image)


def from_kernels_file(path: Path) -> list[Step]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"--kernels: cannot read {path}: {exc.strerror}") from exc
    steps = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise UsageError(f"{path}:{number}: want `LABEL PATH` or `PATH`, got {line!r}")
        label, image = (parts[0], parts[1]) if len(parts) == 2 else (Path(parts[0]).name, parts[0])
        steps.append(Step(label=label, kernel=image))
    return _checked(steps, str(path))


def from_steps_file(path: Path, workdir: Path) -> list[Step]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--steps: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    template_ref, items = data.get("template"), data.get("steps")
    if not isinstance(template_ref, str) or not isinstance(items, list) or not items:
        raise UsageError(f'{path}: want `template = "scenario.toml"` and [[steps]] tables')
    template_path = (path.parent / template_ref).resolve()
    try:
        template = string.Template(template_path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: template {template_path}: {exc.strerror}") from exc
    workdir.mkdir(parents=True, exist_ok=True)
    steps = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise UsageError(f"{path}: step {index + 1} needs a label")
        variables = {k: str(v) for k, v in item.items() if k != "label"}
        try:
            text = template.substitute(variables)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"{path}: step {item['label']}: template variable {exc} is not set") from exc
        out = workdir / f"{item['label']}.toml"
        out.write_text(text)
        steps.append(Step(label=item["label"], scenario=str(out)))
    return _checked(steps, str(path))


def from_git_range(repo: Path, rev_range: str, build: str) -> list[Step]:
    """`A..B` oldest first, A included (the good end); `build` is run per probed commit, {commit} substituted,
    and must print the kernel image path as its last line."""
    if ".." not in rev_range:
        raise UsageError(f"--git wants a range GOOD..BAD, not {rev_range!r}")
    good = rev_range.split("..", 1)[0]
    res = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--reverse", "--first-parent", rev_range],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise UsageError(f"--git {rev_range}: {res.stderr.strip()}")
    commits = [good, *res.stdout.split()]
    return _checked(
        [Step(label=c[:12], build=shlex.split(build.replace("{commit}", c))) for c in commits], rev_range
    )


def _checked(steps: list[Step], where: str) -> list[Step]:
    if len(steps) < 2:
        raise UsageError(f"{where}: a bisect needs at least two steps (good and bad)")
    labels = [s.label for s in steps]
    if len(set(labels)) != len(labels):
        raise UsageError(f"{where}: step labels must be unique")
    return steps


def built_image(step: Step, repo: Path) -> str:
    """Run a git step's build command; its last output line is the image."""
    res = subprocess.run(step.build, cwd=repo, capture_output=True, text=True, check=False)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        raise UsageError(f"build of {step.label} failed ({res.returncode}): {res.stderr.strip()[-300:]}")
    return lines[-1].strip()
