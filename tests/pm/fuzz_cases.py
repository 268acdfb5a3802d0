"""Hypothesis strategies and checks shared by the fuzz tests and benchmarks/fuzz_pm.py."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from mptcpkit.errors import UsageError
from mptcpkit.pm.config import KNOWN_KEYS, load

KEYS = st.sampled_from(
    [*KNOWN_KEYS, "allow-interfaces", "deny-interfaces", "interface-flags", "address-flags"]
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["subflow", "signal", "backup", "fullmesh", "existing", "check_route", "x"])
    ).map(",".join),
    st.sampled_from(["stderr", "journal", "", "/nonexistent", "eth*=subflow+backup", "10.0.0.0/8=signal"]),
)
LINES = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", KEYS, VALUES),
    st.sampled_from(["[core]", "[other]", "[", "[]", "# comment", "; c", "", "   ", "=x", "key"]),
    st.text(max_size=60),
)
CONF_TEXT = st.lists(LINES, max_size=20).map("\n".join)
CONF_BYTES = st.binary(max_size=400)


def check_conf(data: bytes) -> str:
    """Load `data` as mptcpd.conf: 'ok', 'warned' or 'refused'; anything else raised is a bug."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mptcpd.conf"
        p.write_bytes(data)
        p.chmod(0o644)
        with contextlib.suppress(UsageError):
            cfg = load(p, {})
            return "warned" if cfg.warnings else "ok"
        return "refused"
