"""The vocabulary of a verification, shared by the hash checks (``verify``) and the chain checks
(``chains``): each claim checked is one ``Check``, ``ok``, ``failed`` or ``skipped``, with a
sentence saying why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "failed", "skipped"]
OK: Status = "ok"
FAILED: Status = "failed"
SKIPPED: Status = "skipped"


@dataclass(frozen=True)
class Check:
    """One verified claim: its name, the outcome and a sentence saying why."""

    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}
