"""The runner's API to the engine: pure argv builders and output parsers (the runner starts the processes).

    argv = server_argv(ServerOptions(bind="10.0.1.2", port=0, once=True, timeout=30))
    proc = host.spawn(argv); port = parse_ready(proc.readline(5))
    argv = client_argv(ClientOptions(connect="10.0.1.2", port=port, mode="bulk-upload", bytes=10 << 20))
    result = parse_result(host.run(argv).stdout)

Process output is JSON lines: the server first prints a ready line `{"ready":true,"port":P,"pid":N}` once it
listens, then one `TrafficResult` line per session; the client prints one `TrafficResult` line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mptcpkit.errors import LabError
from mptcpkit.lab.traffic.model import TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions

MODULE = "mptcpkit.lab.traffic"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _common(
    argv: list[str],
    port: int,
    proto: str,
    timeout: float | None,
    interval: float,
    sndbuf: int | None,
    rcvbuf: int | None,
    corrupt: int | None,
) -> None:
    argv += ["--port", str(port), "--proto", proto]
    if timeout is not None:
        argv += ["--timeout", _num(timeout)]
    if interval != 0.1:
        argv += ["--interval", _num(interval)]
    if sndbuf is not None:
        argv += ["--sndbuf", str(sndbuf)]
    if rcvbuf is not None:
        argv += ["--rcvbuf", str(rcvbuf)]
    if corrupt is not None:
        argv += ["--test-corrupt-offset", str(corrupt)]


def server_argv(opts: ServerOptions, python: Sequence[str] = ("python3",)) -> list[str]:
    """argv that runs an engine server; `python` is the interpreter on the host (e.g. the venv's)."""
    argv = [*python, "-m", MODULE, "server", "--bind", opts.bind]
    _common(
        argv,
        opts.port,
        opts.proto,
        opts.timeout,
        opts.interval,
        opts.sndbuf,
        opts.rcvbuf,
        opts.corrupt_offset,
    )
    if opts.once:
        argv.append("--once")
    return argv


def client_argv(opts: ClientOptions, python: Sequence[str] = ("python3",)) -> list[str]:
    """argv that runs one engine client session."""
    argv = [*python, "-m", MODULE, "client", "--connect", opts.connect, "--mode", opts.mode]
    _common(
        argv,
        opts.port,
        opts.proto,
        opts.timeout,
        opts.interval,
        opts.sndbuf,
        opts.rcvbuf,
        opts.corrupt_offset,
    )
    if opts.bytes is not None:
        argv += ["--bytes", str(opts.bytes)]
    if opts.duration is not None:
        argv += ["--duration", _num(opts.duration)]
    if opts.count is not None:
        argv += ["--count", str(opts.count)]
    if opts.parallel != 1:
        argv += ["--parallel", str(opts.parallel)]
    if opts.mode == "rr":
        argv += ["--rr-size", f"{opts.rr_size[0]}:{opts.rr_size[1]}"]
    if opts.mode.startswith("bulk-"):
        argv += ["--integrity", opts.integrity]
    if opts.seed != 1:
        argv += ["--seed", str(opts.seed)]
    if opts.bind is not None:
        argv += ["--local", opts.bind]
    if opts.mode == "stream":
        argv += ["--message-size", str(opts.message_size)]
        if opts.rate is not None:
            argv += ["--rate", _num(opts.rate)]
    if opts.join:
        argv += ["--join", str(opts.join)]
    if opts.concurrency != 1:
        argv += ["--concurrency", str(opts.concurrency)]
    if opts.memory:
        argv.append("--memory")
    return argv


def parse_ready(line: str) -> int:
    """The port from the server's ready line; LabError when the line is an error result instead."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise LabError(f"traffic server printed {line[:200]!r} instead of its ready line") from None
    if isinstance(obj, dict) and obj.get("ready") is True:
        return int(obj["port"])
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        raise LabError(f"traffic server failed to start: {obj['error'].get('message')}")
    raise LabError(f"traffic server printed {line[:200]!r} instead of its ready line")


def parse_results(stdout: str) -> list[TrafficResult]:
    """Every result line of a process's stdout (ready lines and blank lines are skipped)."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{") or line.startswith('{"ready"'):
            continue
        try:
            out.append(TrafficResult.from_json(line))
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(f"unreadable traffic result line: {exc}: {line[:200]!r}") from None
    return out


def parse_result(stdout: str) -> TrafficResult:
    """The last result in a process's stdout; LabError when there is none (process crashed?)."""
    results = parse_results(stdout)
    if not results:
        raise LabError(f"traffic process printed no result (stdout: {stdout.strip()[-300:]!r})")
    return results[-1]
