"""Consistent redaction for bug reports: the same address always gets the same placeholder.

Pure text -> text. IPv4, IPv6 and link-layer (MAC) addresses and the host's names are replaced; the
well-known wildcard and loopback addresses (0.0.0.0, ::, 127.0.0.1, ::1) are kept since they identify
nothing and help reading socket tables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

KEEP = frozenset({"0.0.0.0", "::", "127.0.0.1", "::1", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"})

_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?:\.\d{1,3}){0,3}(?![\w:])"
)
_MAC = re.compile(r"(?<![\w:])[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5,19}(?![\w:])")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")


class Redactor:
    """Replaces addresses with stable placeholders (`ipv4-1`, `ipv6-1`, `mac-1`, `hostname-1`)."""

    def __init__(self, hostnames: Iterable[str] = ()) -> None:
        self.mapping: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        names = sorted(
            {h for h in hostnames if h and h not in ("localhost", "localhost.localdomain")},
            key=len,
            reverse=True,
        )
        self._host_re = (
            re.compile(r"(?<![\w.-])(" + "|".join(re.escape(h) for h in names) + r")(?![\w-])")
            if names
            else None
        )

    def _token(self, kind: str, value: str) -> str:
        key = f"{kind}:{value}"
        if key not in self.mapping:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self.mapping[key] = f"{kind}-{self._counts[kind]}"
        return self.mapping[key]

    def _ipv6(self, m: re.Match[str]) -> str:
        text = m.group(0)
        candidates = [text]
        head, sep, _port = text.rpartition(":")
        if sep and head:
            candidates.append(head)  # `addr:port` written without brackets
        for cand in candidates:
            try:
                ip = ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            rest = text[len(cand) :]
            if str(ip) in KEEP or cand in KEEP:
                return text
            if ip.ipv4_mapped is not None:  # same placeholder as the plain IPv4 form
                v4 = str(ip.ipv4_mapped)
                return ("::ffff:" + (v4 if v4 in KEEP else self._token("ipv4", v4))) + rest
            return self._token("ipv6", str(ip)) + rest
        return text

    def _ipv4(self, m: re.Match[str]) -> str:
        text = m.group(0)
        try:
            ip = ipaddress.IPv4Address(text)
        except ValueError:
            return text
        if text in KEEP:
            return text
        return self._token("ipv4", str(ip))

    def _mac(self, m: re.Match[str]) -> str:
        text = m.group(0).lower()
        return text if text in KEEP else self._token("mac", text)

    def __call__(self, text: str) -> str:
        text = _IPV6_CANDIDATE.sub(self._ipv6, text)
        text = _MAC.sub(self._mac, text)
        text = _IPV4.sub(self._ipv4, text)
        if self._host_re is not None:
            text = self._host_re.sub(lambda m: self._token("hostname", m.group(0)), text)
        return text
