"""``python -m bench gateway --quick`` runs end to end and reports every figure."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path


def test_bench_gateway_quick(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    subprocess.run([sys.executable, "-m", "bench", "gateway", "--quick", "--out", str(out)],
                   cwd=Path(__file__).resolve().parents[2], check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    rates = [*figures["ungoverned_spans_per_s"].values(), *figures["governed_sessions_per_s"].values(),
             *figures["ratios"].values()]
    assert len(rates) == 10
    rates.append(figures["pending_trace_bytes"])
    assert math.isfinite(figures["journal_ms_per_request"])
    assert all(math.isfinite(rate) and rate > 0 for rate in rates)
