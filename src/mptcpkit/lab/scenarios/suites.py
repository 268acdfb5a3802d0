"""Built-in scenario files, suite files, and turning names/paths/globs into scenario specs.

The built-in scenarios are TOML files in `mptcpkit/lab/scenarios/builtin/`, the default suite is
`mptcpkit/lab/scenarios/suites/default.toml`; both ship as package data, and are read with the same loader
as users' files.
"""

from __future__ import annotations

import functools
import glob
import tomllib
from collections.abc import Iterable
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

from mptcpkit.errors import UsageError
from mptcpkit.lab.model import ModelError, field_path_text
from mptcpkit.lab.scenarios.loader import load_scenario_file, parse_scenarios
from mptcpkit.lab.scenarios.spec import ScenarioSpec, SuiteSpec
from mptcpkit.lab.scenarios.values import ScenarioError, Table, did_you_mean, parse_number, read_text
from mptcpkit.lab.toml_lines import index_lines, line_of

SUITE_KEYS = {"name", "description", "reps", "scale", "scenarios"}
DEFAULT_SUITE = "default"


def _package_dir(sub: str) -> Any:
    return resources.files("mptcpkit.lab.scenarios") / sub


@functools.cache
def builtin_specs() -> dict[str, ScenarioSpec]:
    """Every built-in scenario (sweep cases included), by name, in file-name order."""
    specs: dict[str, ScenarioSpec] = {}
    folder = _package_dir("builtin")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".toml"):
            continue
        origin = f"built-in: builtin/{entry.name}"
        for spec in parse_scenarios(entry.read_text(), source=entry.name, origin=origin):
            specs[spec.name] = spec
    return specs


@functools.cache
def builtin_suite_names() -> tuple[str, ...]:
    """The suites shipped with mptcpkit (`suites/*.toml`): `default`, `full`."""
    return tuple(
        sorted(
            e.name.removesuffix(".toml") for e in _package_dir("suites").iterdir() if e.name.endswith(".toml")
        )
    )


def names_builtin_suite(ref: str) -> bool:
    """Whether `--suite ref` means a built-in suite: its name, and no file or directory of that name here."""
    return ref in builtin_suite_names() and not Path(ref).exists()


@functools.cache
def builtin_suite_spec(name: str) -> SuiteSpec:
    entry = _package_dir("suites") / f"{name}.toml"
    return parse_suite(entry.read_text(), source=f"suites/{name}.toml", base_dir=None)


def default_suite_spec() -> SuiteSpec:
    return builtin_suite_spec(DEFAULT_SUITE)


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or ref.startswith(".")


def _is_glob(ref: str) -> bool:
    return any(c in ref for c in "*?") or (ref.startswith("[") or "[!" in ref)


def resolve(refs: Iterable[str], base_dir: Path | None = None) -> list[ScenarioSpec]:
    """Names (built-in or 'default'), globs over names, file paths and globs of files -> specs, deduplicated."""
    out: dict[str, ScenarioSpec] = {}
    for ref in refs:
        for spec in _resolve_one(ref, base_dir):
            if spec.name in out and out[spec.name].origin != spec.origin:
                raise UsageError(
                    f"two scenarios are called '{spec.name}': {out[spec.name].origin} and {spec.origin}",
                    hint="give one of them another `name =`",
                )
            out[spec.name] = spec
    return list(out.values())


def _resolve_one(ref: str, base_dir: Path | None) -> list[ScenarioSpec]:
    if not ref:
        raise UsageError("an empty scenario name")
    if _is_path(ref):
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if any(c in ref for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(str(path)))
            if not files:
                raise UsageError(f"no scenario file matches '{ref}'")
            return [s for f in files for s in load_scenario_file(f, origin=str(f))]
        return load_scenario_file(path, origin=str(path))
    builtin = builtin_specs()
    if ref == DEFAULT_SUITE:
        return list(default_suite_spec().scenarios)
    if ref in builtin:
        return [builtin[ref]]
    sweep = [s for s in builtin.values() if s.sweep == ref]
    if sweep:
        return sweep
    if _is_glob(ref):
        matched = [s for name, s in builtin.items() if fnmatchcase(name, ref)]
        if not matched:
            raise UsageError(f"no built-in scenario matches '{ref}'; see `mptcpkit lab run --list`")
        return matched
    raise UsageError(
        f"unknown scenario '{ref}'{did_you_mean(ref, builtin)}",
        hint="see `mptcpkit lab run --list`, or give a .toml file path",
    )


def load_suite(path: str | Path) -> SuiteSpec:
    """A suite file, a directory (its suite.toml, else every *.toml in it as a scenario), or a built-in suite's
    name (`full`) when no such file or directory exists."""
    target = Path(path)
    if names_builtin_suite(str(path)):
        return builtin_suite_spec(str(path))
    if not target.exists() and not _is_path(str(path)):
        raise UsageError(
            f"no suite file or built-in suite called '{path}'{did_you_mean(str(path), builtin_suite_names())}",
            hint=f"built-in suites: {', '.join(builtin_suite_names())}; or give a suite file or a directory",
        )
    if target.is_dir():
        suite_file = target / "suite.toml"
        if suite_file.is_file():
            return load_suite(suite_file)
        files = sorted(target.glob("*.toml"))
        if not files:
            raise UsageError(f"{target}: no *.toml scenario files in this directory")
        specs = resolve([str(f) for f in files])
        return SuiteSpec(name=target.name, scenarios=tuple(specs), origin=str(target))
    return parse_suite(read_text(target, "suite file"), source=str(target), base_dir=target.parent)


def parse_suite(text: str, source: str, base_dir: Path | None) -> SuiteSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", file=source) from None
    except RecursionError:
        raise ScenarioError("not valid TOML: nested too deeply", file=source) from None
    lines = index_lines(text)
    try:
        top = Table(data, (), SUITE_KEYS)
        refs = top.array("scenarios")
        if not refs:
            raise ModelError(("scenarios",), 'a suite lists its scenarios: scenarios = ["NAME", "file.toml"]')
        for i, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref:
                raise ModelError(("scenarios", i), "expected a scenario name, a .toml path or a glob")
        reps = top.integer("reps", None, low=1)
        if reps is not None and reps > 1000:
            raise ModelError(("reps",), "at most 1000 repetitions")
        scale = top.parse("scale", parse_number)
        if scale is not None and not 0.1 <= scale <= 100:
            raise ModelError(("scale",), "scale must be within 0.1..100")
        specs: list[ScenarioSpec] = []
        for i, ref in enumerate(refs):
            try:
                specs += resolve([ref], base_dir)
            except ScenarioError:
                raise
            except UsageError as exc:
                raise ModelError(("scenarios", i), exc.message) from None
        names = [s.name for s in specs]
        for name in names:
            if names.count(name) > 1:
                raise ModelError(("scenarios",), f"scenario '{name}' is listed twice")
        return SuiteSpec(
            name=top.string("name", Path(source).stem) or Path(source).stem,
            scenarios=tuple(specs),
            description=top.string("description", "") or "",
            reps=reps,
            scale=scale,
            origin=source,
        )
    except ModelError as exc:
        raise ScenarioError(
            exc.message, file=source, line=line_of(lines, exc.path), field=field_path_text(exc.path)
        ) from None
