"""What a link direction should look like, and the pure planning that turns it into tc/emulator settings.

No I/O here: everything is unit-testable without namespaces.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mptcpkit.errors import UsageError

Mode = Literal["auto", "netem", "userspace", "tc"]
WireMode = Literal["none", "tc", "netem", "userspace"]
Stage = Literal["none", "tc", "netem", "userspace"]

ETH_HEADER = 14
# tbf bucket: 1 ms worth of tokens, at least two full frames. Small enough that the rate holds over
# a few milliseconds (accuracy), big enough that timer slack does not starve the bucket at Gbit rates.
BURST_TIME_S = 0.001
MIN_BURST_FRAMES = 2
NETEM_UNSHAPED_LIMIT = 100_000
# Above this rate the emulator takes whole GSO frames; below it the kernel segments them (see tap_gso).
GSO_MIN_RATE_BPS = 200_000_000


@dataclass(frozen=True)
class LinkShape:
    """One direction of a link: rate (None = unshaped), one-way delay, uniform jitter, loss, queue length.

    ``queue_packets`` is the bottleneck queue (tbf limit, in full-size frames). ``reorder`` needs netem.
    """

    rate_bps: int | None
    delay_s: float = 0
    jitter_s: float = 0
    loss: float = 0
    queue_packets: int = 1000
    reorder: float = 0

    def __post_init__(self) -> None:
        if self.rate_bps is not None and (not isinstance(self.rate_bps, int) or self.rate_bps <= 0):
            raise UsageError(f"link rate must be a positive number of bit/s, got {self.rate_bps!r}")
        if self.rate_bps is not None and self.rate_bps >= 32 * 2**30 * 8:
            raise UsageError(
                f"link rate {self.rate_bps} bit/s is above tbf's 32-bit limit; leave it unshaped"
            )
        for name in ("delay_s", "jitter_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or value > 60:
                raise UsageError(f"link {name.removesuffix('_s')} must be between 0 and 60 s, got {value!r}")
        if self.jitter_s > self.delay_s:
            raise UsageError(f"link jitter ({self.jitter_s} s) cannot exceed its delay ({self.delay_s} s)")
        for name in ("loss", "reorder"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 1:
                raise UsageError(f"link {name} is a fraction between 0 and 1, got {value!r}")
        if not isinstance(self.queue_packets, int) or self.queue_packets < 1:
            raise UsageError(f"link queue_packets must be a positive integer, got {self.queue_packets!r}")

    @property
    def shaped(self) -> bool:
        """True when this direction differs from a plain cable."""
        return self.rate_bps is not None or self.needs_delay_line

    @property
    def needs_delay_line(self) -> bool:
        """True when rate shaping alone (tbf) is not enough."""
        return bool(self.delay_s or self.jitter_s or self.loss or self.reorder)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TbfParams:
    """tbf settings for one direction; limit is bytes because tbf counts bytes."""

    rate_bps: int
    burst_bytes: int
    limit_bytes: int


def tbf_params(shape: LinkShape, mtu: int = 1500) -> TbfParams | None:
    """Rate queue for ``shape``: bucket of ~1 ms (>= 2 frames), limit = queue_packets full frames."""
    if shape.rate_bps is None:
        return None
    frame = mtu + ETH_HEADER
    burst = max(int(shape.rate_bps / 8 * BURST_TIME_S), MIN_BURST_FRAMES * frame)
    return TbfParams(rate_bps=shape.rate_bps, burst_bytes=burst, limit_bytes=shape.queue_packets * frame)


def netem_limit(shape: LinkShape, mtu: int = 1500) -> int:
    """netem's limit counts every packet it holds, in the rate queue and in the delay line alike.

    With a rate: queue_packets plus what the link carries during delay + jitter. Without a rate the
    delay line alone must hold a Gbit/s BDP, so the limit is generous.
    """
    if shape.rate_bps is None:
        return max(shape.queue_packets, NETEM_UNSHAPED_LIMIT)
    in_flight = shape.rate_bps * (shape.delay_s + shape.jitter_s) / 8 / (mtu + ETH_HEADER)
    return shape.queue_packets + math.ceil(in_flight) + 1


def netem_args(shape: LinkShape, limit: int) -> list[str]:
    """The options after `tc qdisc ... netem`: one rendering for the wire (tc.py) and for SSH/VM hosts."""
    args = ["limit", str(limit), "delay", f"{round(shape.delay_s * 1e6)}us"]
    if shape.jitter_s:
        args.append(f"{round(shape.jitter_s * 1e6)}us")
    if shape.loss:
        args += ["loss", f"{shape.loss * 100:.6f}%"]
    if shape.reorder:
        args += ["reorder", f"{shape.reorder * 100:.6f}%"]
    if shape.rate_bps is not None:
        args += ["rate", f"{shape.rate_bps}bit"]
    return args


def choose_mode(a_to_b: LinkShape, b_to_a: LinkShape, requested: Mode, has_netem: bool | None) -> WireMode:
    """The emulation a wire uses. ``has_netem`` may be None when it was not needed to decide.

    auto: nothing to shape -> "none"; otherwise netem when the kernel has it, else the userspace emulator.
    Rate-only links are shaped by netem or the emulator too, not by a bare tbf: see ``tc`` mode's caveat.
    """
    if requested not in ("auto", "netem", "userspace", "tc"):
        raise UsageError(f"emulation mode must be auto, netem, userspace or tc, got {requested!r}")
    shaped = a_to_b.shaped or b_to_a.shaped
    reorder = bool(a_to_b.reorder or b_to_a.reorder)
    if requested == "tc":
        if a_to_b.needs_delay_line or b_to_a.needs_delay_line:
            raise UsageError("mode 'tc' shapes rate only; delay, jitter and loss need netem or userspace")
        return "tc" if shaped else "none"
    if requested == "netem" or (requested == "auto" and reorder):
        if not has_netem:
            what = "reordering needs" if reorder and requested == "auto" else "mode 'netem' needs"
            raise UsageError(
                f"{what} the kernel's netem qdisc, which this kernel does not have",
                hint="drop 'reorder' (without netem only jitter reorders) or use a kernel with sch_netem",
            )
        return "netem" if shaped else "none"
    if reorder:
        raise UsageError("the userspace emulator has no reorder probability (jitter reorders); use netem")
    if not shaped:
        return "none"
    if requested == "userspace":
        return "userspace"
    return "netem" if has_netem else "userspace"


def direction_stage(shape: LinkShape, mode: WireMode) -> Stage:
    """How one direction is handled inside a wire of ``mode``: unshaped directions are a plain redirect."""
    return mode if shape.shaped else "none"


def tap_gso(shape: LinkShape) -> bool:
    """Let GSO frames (up to 64 KiB) through the TAP, or have the kernel segment them first.

    Whole GSO frames keep the emulator at a few thousand frames/s even at Gbit/s; loss stays per packet
    (the forwarder carves a lost packet out of its frame). Segmenting is wanted at low rates, where one
    GSO frame would be a visible burst.
    """
    return shape.rate_bps is None or shape.rate_bps > GSO_MIN_RATE_BPS


def tap_name(a_if: str, b_if: str, direction: Literal["ab", "ba"]) -> str:
    """A short (<= 15 chars) TAP name unique per link and direction within the wire namespace."""
    digest = hashlib.sha1(f"{a_if}\0{b_if}".encode()).hexdigest()[:8]
    return f"mkte{digest}{direction}"


def seed_for(base: int, a_if: str, b_if: str, direction: str) -> int:
    """Per-direction PRNG seed: reproducible runs, but the two directions do not lose the same packets."""
    return int.from_bytes(hashlib.sha1(f"{base}\0{a_if}\0{b_if}\0{direction}".encode()).digest()[:8], "big")
