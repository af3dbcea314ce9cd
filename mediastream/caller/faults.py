"""Network faults the simulated caller can inject (``--fault``).

=====================  =============================================================
``jitter:MS``          each caller frame leaves 0..MS ms late (uniform), order kept
``reorder:P``          with probability P a frame is held and sent after the next one
                       (Telnyx documents that its frames may arrive out of order, §2.2)
``stall:MS@T``         at T s into the call the connection freezes both ways for MS ms,
                       then the backlog goes out in one burst (a TCP stall: late, not lost)
``close@T``            at T s the TCP connection is aborted: no stop, no close frame
``halfopen@T``         at T s the caller goes silent without closing (a dead peer); the
                       report says whether and when the server noticed and closed
=====================  =============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fault", "FaultPlan", "parse_fault"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One parsed ``--fault`` value."""

    kind: str  # jitter | reorder | stall | close | halfopen
    value: float = 0.0  # ms for jitter/stall, probability for reorder
    at: float = 0.0  # seconds into the call for stall/close/halfopen

    def __str__(self) -> str:
        if self.kind in ("jitter", "reorder"):
            return f"{self.kind}:{self.value:g}"
        if self.kind == "stall":
            return f"stall:{self.value:g}@{self.at:g}"
        return f"{self.kind}@{self.at:g}"


def parse_fault(spec: str) -> Fault:
    """Parse ``jitter:MS``, ``reorder:P``, ``stall:MS@T``, ``close@T`` or ``halfopen@T``."""
    text = spec.strip()
    try:
        if text.startswith("jitter:"):
            ms = float(text[7:])
            if ms < 0:
                raise ValueError
            return Fault("jitter", value=ms)
        if text.startswith("reorder:"):
            p = float(text[8:])
            if not 0 <= p <= 1:
                raise ValueError
            return Fault("reorder", value=p)
        if text.startswith("stall:"):
            ms_text, _, at_text = text[6:].partition("@")
            fault = Fault("stall", value=float(ms_text), at=float(at_text))
            if fault.value <= 0 or fault.at < 0:
                raise ValueError
            return fault
        for kind in ("close", "halfopen"):
            if text.startswith(kind + "@"):
                at = float(text[len(kind) + 1 :])
                if at < 0:
                    raise ValueError
                return Fault(kind, at=at)
    except ValueError:
        pass
    raise ValueError(
        f"bad fault {spec!r}: expected jitter:MS, reorder:P, stall:MS@T, close@T or halfopen@T"
    )


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one run, split by how the call applies them."""

    jitter_ms: float = 0.0
    reorder: float = 0.0
    stalls: tuple[Fault, ...] = ()
    close_at: float | None = None
    halfopen_at: float | None = None

    @classmethod
    def of(cls, faults: list[Fault] | tuple[Fault, ...]) -> FaultPlan:
        """Combine parsed faults (the last jitter/reorder/close/halfopen wins)."""
        jitter = reorder = 0.0
        stalls: list[Fault] = []
        close_at = halfopen_at = None
        for f in faults:
            if f.kind == "jitter":
                jitter = f.value
            elif f.kind == "reorder":
                reorder = f.value
            elif f.kind == "stall":
                stalls.append(f)
            elif f.kind == "close":
                close_at = f.at
            elif f.kind == "halfopen":
                halfopen_at = f.at
        return cls(jitter, reorder, tuple(stalls), close_at, halfopen_at)

    @property
    def any(self) -> bool:
        return bool(
            self.jitter_ms or self.reorder or self.stalls
            or self.close_at is not None or self.halfopen_at is not None
        )
