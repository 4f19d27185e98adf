"""What aggregation reads of a run besides the records it kept: the tally of records past the
per-run bound (``Overflow``) and the GenAI resources its spans named (``Observed``).

Correlation fills both and aggregation reads them; they live here so that aggregation (also used
by the builder API and ``verify``, which have no correlator) does not depend on correlation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aigp_otel_bridge import semconv as sc
from aigp_otel_bridge.stages.extract import GovernanceRecord

Observed = tuple[str, str, "str | None"]
"""A resource seen on GenAI spans: (type, name, provider)."""


@dataclass
class Overflow:
    """What is kept of records past the per-run bound: only what the aggregate needs."""

    hashes: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    """Each distinct governance hash with its hash type and leaf count (the first one seen)."""
    count: int = 0
    denied: int = 0
    classification_rank: int = -1
    invalid: int = 0

    def add(self, record: GovernanceRecord) -> None:
        self.count += 1
        self.denied += record.denied
        self.invalid += record.invalid
        if record.governance_hash is not None:
            self.hashes.setdefault(record.governance_hash, (record.hash_type, record.leaf_count))
        if record.classification is not None:
            self.classification_rank = max(
                self.classification_rank, sc.CLASSIFICATION_RANK[record.classification]
            )
