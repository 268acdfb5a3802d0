"""SIGTERM as Ctrl-C in the process that asked for it, and the default death in the children it forks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from mptcpkit.interrupts import sigterm_as_interrupt


def test_sigterm_raises_keyboard_interrupt_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_forked_child_dies_by_sigterm_without_running_the_parents_cleanup(tmp_path: Path) -> None:
    """pyroute2 forks a helper per namespace socket and stops it with SIGTERM: the helper must not unwind the
    parent's stack (lab teardown, run marked incomplete) in the child."""
    cleanup_ran = tmp_path / "cleanup-ran"
    with sigterm_as_interrupt():
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what a `finally` of the parent's code looks like from here
            try:
                os.close(ready_r)
                os.write(ready_w, b"x")
                time.sleep(30)
            finally:
                cleanup_ran.write_text("the child ran the parent's cleanup")
                os._exit(0)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
        os.close(ready_r)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not cleanup_ran.exists()
