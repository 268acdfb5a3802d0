"""One client session: dispatch to the mode, turn any failure into the result's error (never a traceback)."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict

from mptcpkit.lab.traffic.bulk import client_bulk
from mptcpkit.lab.traffic.connect import client_connect
from mptcpkit.lab.traffic.model import ErrorInfo, TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions
from mptcpkit.lab.traffic.paced import client_paced
from mptcpkit.lab.traffic.results import finish, mark_cpu_baseline
from mptcpkit.lab.traffic.rr import client_rr
from mptcpkit.lab.traffic.sockets import EngineError, Watchdog, classify

_MODES = {"rr": client_rr, "connect": client_connect, "stream": client_paced}


def run_client(opts: ClientOptions) -> TrafficResult:
    """Run one client session and return its result (errors are inside it, never raised)."""
    result = TrafficResult(
        role="client",
        engine="mptcpkit",
        mode=opts.mode,
        proto=opts.proto,
        ok=False,
        started_at=time.time(),
        ended_at=0.0,
        options={k: v for k, v in asdict(opts).items() if k != "corrupt_offset"},
    )
    wd = Watchdog(opts.timeout)
    mark_cpu_baseline()
    try:
        session = uuid.uuid4().hex
        run = client_bulk if opts.mode.startswith("bulk-") else _MODES.get(opts.mode)
        if run is None:
            raise EngineError("usage", f"unknown mode {opts.mode!r}")
        run(opts, wd, session, result)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            result.error = ErrorInfo("interrupted", "interrupted")
        else:
            err = classify(exc, wd)
            result.error = ErrorInfo(err.kind, err.message)
    finally:
        wd.cancel()
    return finish(result)
