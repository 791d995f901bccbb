"""Guest-visible errors and UNPREDICTABLE accesses, recorded as data (never raised)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EventLog", "GuestError"]


@dataclass(frozen=True, slots=True)
class GuestError:
    """Software did something the architecture calls an error or UNPREDICTABLE.

    ``outcome`` says what the model did about it (the knob-selected choice).
    """

    source: str
    what: str
    outcome: str
    code: int | None = None

    def __str__(self) -> str:
        code = f" [{self.code:#08x}]" if self.code is not None else ""
        return f"{self.source}: {self.what}{code} -> {self.outcome}"


@dataclass(slots=True)
class EventLog:
    """Where hardware blocks report guest errors; bounded so a runaway guest costs O(1)."""

    limit: int = 10_000
    errors: list[GuestError] = field(default_factory=list)
    dropped: int = 0

    def emit(self, error: GuestError) -> None:
        if len(self.errors) < self.limit:
            self.errors.append(error)
        else:
            self.dropped += 1
