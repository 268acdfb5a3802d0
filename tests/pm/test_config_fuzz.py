"""Fuzzed mptcpd.conf files: a warning or one clear UsageError, never anything else (issue 14/15)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from .fuzz_cases import CONF_BYTES, CONF_TEXT, check_conf


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONF_TEXT)
def test_fuzzed_config_text(text: str) -> None:
    assert check_conf(("[core]\n" + text).encode("utf-8", "surrogatepass")) in ("ok", "warned", "refused")


@settings(max_examples=40, deadline=None)
@given(CONF_BYTES)
def test_fuzzed_config_bytes(data: bytes) -> None:
    assert check_conf(data) in ("ok", "warned", "refused")
