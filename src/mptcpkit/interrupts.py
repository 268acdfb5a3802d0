"""SIGTERM handled like Ctrl-C, so `finally` blocks tear down namespaces, processes and labs on `kill` too."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises KeyboardInterrupt in the main thread (Python's default would skip every cleanup).

    Only in this process: pyroute2 forks a helper for every netlink socket opened in a namespace and stops it
    with SIGTERM. A helper that inherited this handler would raise too, and unwind the *parent's* stack in the
    child (its `finally` blocks: lab teardown, "run incomplete" in the store). A forked child dies by the
    signal, as it would without the handler. Outside the main thread this does nothing (signals go there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)  # not reached: the default action ends the process
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
