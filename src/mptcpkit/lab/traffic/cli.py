"""Argument parsing for the engine process; prints JSON only (ready line, then one result per session)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import NoReturn

from mptcpkit.lab.traffic.client import run_client
from mptcpkit.lab.traffic.model import INTEGRITY_MODES, MODES, PROTOS, ErrorInfo, TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions
from mptcpkit.lab.traffic.server import Server, ready_line
from mptcpkit.lab.traffic.sockets import EngineError, classify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """`1000`, `64K`, `10M`, `1G` (binary multiples, like iperf3) -> bytes."""
    t = text.strip().lower()
    mult = _SUFFIX.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in _SUFFIX else t
    try:
        value = int(float(num) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1000, 64K, 10M, 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_rr(text: str) -> tuple[int, int]:
    """`REQ:RESP` sizes in bytes, e.g. `1:1` or `100:10000`."""
    try:
        q, r = text.split(":")
        return parse_size(q), parse_size(r)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rr-size wants REQ:RESP, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _print_error("usage", f"{self.prog}: {message}")
        sys.exit(EXIT_USAGE)


def _print_error(kind: str, message: str) -> None:
    now = time.time()
    res = TrafficResult(
        role="",
        engine="mptcpkit",
        mode="",
        proto="",
        ok=False,
        started_at=now,
        ended_at=now,
        error=ErrorInfo(kind, message),
    )
    print(res.to_json(), flush=True)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m mptcpkit.lab.traffic", description="mptcpkit traffic engine (JSON on stdout)")
    sub = p.add_subparsers(dest="role", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--port", type=int, required=True, help="TCP port (server: 0 = any, see ready line)")
    common.add_argument("--proto", choices=PROTOS, default="mptcp")
    common.add_argument("--timeout", type=_positive_float, default=None, help="bound the whole run (seconds)")
    common.add_argument("--interval", type=_positive_float, default=0.1, help="sampling interval (seconds)")
    common.add_argument(
        "--sndbuf", type=parse_size, default=None, help="SO_SNDBUF (default: kernel autotuning)"
    )
    common.add_argument(
        "--rcvbuf", type=parse_size, default=None, help="SO_RCVBUF (default: kernel autotuning)"
    )
    common.add_argument("--test-corrupt-offset", type=int, default=None, help=argparse.SUPPRESS)

    s = sub.add_parser("server", parents=[common], help="accept sessions, print one result per session")
    s.add_argument("--bind", required=True, help="local address to listen on (0.0.0.0 / :: for any)")
    s.add_argument("--once", action="store_true", help="exit after one session")

    c = sub.add_parser("client", parents=[common], help="run one session against a server")
    c.add_argument("--connect", required=True, help="server address")
    c.add_argument("--mode", choices=MODES, required=True)
    size = c.add_mutually_exclusive_group()
    size.add_argument(
        "--bytes",
        type=parse_size,
        default=None,
        help="bulk: bytes per stream; connect: bytes each probe fetches (K/M/G = 2^10..)",
    )
    size.add_argument(
        "--duration", type=_positive_float, default=None, help="seconds per stream / rr / connect"
    )
    c.add_argument(
        "--count", type=int, default=None, help="rr: transactions; connect: connections; stream: messages"
    )
    c.add_argument("--parallel", type=int, default=1, help="bulk: parallel connections")
    c.add_argument("--rr-size", type=parse_rr, default=(1, 1), help="rr: REQ:RESP bytes (default 1:1)")
    c.add_argument(
        "--integrity",
        choices=INTEGRITY_MODES,
        default="sha256",
        help="sha256: hash both ends; verify: compare with the expected stream; none",
    )
    c.add_argument("--message-size", type=parse_size, default=1024, help="stream: bytes per message")
    c.add_argument("--rate", type=_positive_float, default=None, help="stream: application rate in bit/s")
    c.add_argument("--join", type=int, default=0, help="connect: also wait for N more MPTCP subflows")
    c.add_argument("--concurrency", type=int, default=1, help="connect: connections in flight at once")
    c.add_argument(
        "--memory", action="store_true", help="bulk: kernel socket memory per connection (sockstat, slab)"
    )
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--local", default=None, help="bind the client socket to this address first")
    return p


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.role == "server":
            return _server(args)
        return _client(args)
    except KeyboardInterrupt:
        _print_error("interrupted", "interrupted")
        return EXIT_FAILED


def _emit(line: str) -> None:
    print(line, flush=True)


def _server(args: argparse.Namespace) -> int:
    opts = ServerOptions(
        bind=args.bind,
        port=args.port,
        proto=args.proto,
        once=args.once,
        timeout=args.timeout,
        interval=args.interval,
        sndbuf=args.sndbuf,
        rcvbuf=args.rcvbuf,
        corrupt_offset=args.test_corrupt_offset,
    )
    try:
        server = Server(opts, _emit)
    except OSError as exc:
        err = classify(exc)
        _print_error(err.kind, f"cannot listen on {args.bind}:{args.port}: {err.message}")
        return EXIT_USAGE if err.kind == "environment" else EXIT_FAILED
    _emit(ready_line(server.port))
    return server.serve()


def _client(args: argparse.Namespace) -> int:
    if args.parallel < 1:
        _print_error("usage", "--parallel must be >= 1")
        return EXIT_USAGE
    if args.mode.startswith("bulk-") and args.bytes is None and args.duration is None:
        _print_error("usage", "bulk modes need --bytes N or --duration S")
        return EXIT_USAGE
    duration = args.duration or 0.0
    timeout = args.timeout if args.timeout is not None else 60.0 + duration
    opts = ClientOptions(
        connect=args.connect,
        port=args.port,
        mode=args.mode,
        proto=args.proto,
        bytes=args.bytes,
        duration=args.duration,
        interval=args.interval,
        parallel=args.parallel,
        rr_size=args.rr_size,
        count=args.count,
        timeout=timeout,
        seed=args.seed,
        integrity=args.integrity,
        bind=args.local,
        sndbuf=args.sndbuf,
        rcvbuf=args.rcvbuf,
        corrupt_offset=args.test_corrupt_offset,
        message_size=args.message_size,
        rate=args.rate,
        join=args.join,
        concurrency=args.concurrency,
        memory=args.memory,
    )
    res = run_client(opts)
    _emit(res.to_json())
    if res.error is not None and res.error.kind in ("usage", "environment"):
        return EXIT_USAGE
    return EXIT_OK if res.ok else EXIT_FAILED


__all__ = ["EngineError", "main", "make_parser", "parse_size"]
