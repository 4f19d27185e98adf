"""Two checkouts of the bridge in one run: ``python -m bench compare PATH``.

Before/after figures taken in separate runs move with the machine's load by more than most
changes are worth. Here the package of another checkout (``PATH``, a folder holding an
``aigp_otel_bridge`` package, e.g. ``git worktree add /tmp/before <commit>``) is imported beside
this one and becomes one more configuration, ``other``, interleaved round by round with ``none``,
``batch`` and ``bridge`` in the span and session measurements. The report gives each one's extra
CPU per item and the ratio ``bridge / other`` (min and median of rounds), and the paired figure
that noise disturbs least: per round, ``bridge`` minus ``other`` (adjacent windows), its median
and middle half over the rounds. ``--without-genai`` drops the ``gen_ai.*`` attributes of the child
spans, for a checkout from before GenAI spans became inputs (contract section 9): both then emit
the same RunEvents.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from aigp_otel_bridge import AIGPLineageSpanProcessor
from bench import timing, workloads

PACKAGE = "aigp_otel_bridge"
OTHER = "other"


def _package_modules() -> dict[str, Any]:
    return {name: module for name, module in sys.modules.items()
            if name == PACKAGE or name.startswith(PACKAGE + ".")}


def load_processor(tree: Path) -> type[AIGPLineageSpanProcessor]:
    """The span processor class of the package in ``tree``, imported beside this one.

    The package's modules are taken out of ``sys.modules`` while the other copy is imported, then
    put back; the other copy's functions keep their own module globals, so both run side by side.
    """
    if not (tree / PACKAGE / "__init__.py").is_file():
        raise SystemExit(f"compare: {tree} holds no {PACKAGE} package")
    ours = _package_modules()
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        processor: type[AIGPLineageSpanProcessor] = importlib.import_module(PACKAGE).AIGPLineageSpanProcessor
        if not Path(sys.modules[PACKAGE].__file__ or "").resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"compare: {PACKAGE} did not load from {tree}")
    finally:
        sys.path.remove(str(tree))
        for name in _package_modules():
            del sys.modules[name]
        sys.modules.update(ours)
    return processor


def _ratio(case: dict[str, Any], key: str) -> float:
    extra = case[key]
    return float(extra["bridge"] / extra[OTHER]) if extra[OTHER] else float("nan")


def _us(ns: float) -> str:
    return f"{ns / 1000:+.2f} µs"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.splitlines()[0])
    parser.add_argument("tree", type=Path, help="folder holding the other checkout's aigp_otel_bridge")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=2_000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument("--without-genai", action="store_true",
                        help="child spans without their gen_ai.* attributes: for a checkout that does not "
                        "read them, the same RunEvents on both sides")
    args = parser.parse_args(argv)
    if args.without_genai:  # every workload reads this module constant when it makes its spans
        ordinary = workloads.ORDINARY_ATTRIBUTES
        workloads.ORDINARY_ATTRIBUTES = {k: v for k, v in ordinary.items() if not k.startswith("gen_ai.")}
    others = {OTHER: load_processor(args.tree)}
    cases = {
        "ungoverned_span": timing.measure_spans("ungoverned_span", args.spans, args.rounds, governed=False,
                                                others=others),
        "governed_span": timing.measure_spans("governed_span", args.spans, args.rounds, governed=True,
                                              others=others),
        "governed_session": timing.measure_sessions(args.sessions, args.rounds, others=others),
    }
    results = {name: case.to_json() for name, case in cases.items()}
    print(f"extra CPU per item, this checkout (bridge) and {args.tree} ({OTHER}); min / median of "
          f"{args.rounds} interleaved rounds")
    for name, data in results.items():
        extra, median = data["extra_ns_per_item"], data["median_extra_ns_per_item"]
        print(f"  {name:<18} bridge {extra['bridge'] / 1000:9.2f} / {median['bridge'] / 1000:9.2f} µs   "
              f"{OTHER} {extra[OTHER] / 1000:9.2f} / {median[OTHER] / 1000:9.2f} µs   "
              f"bridge/{OTHER} {_ratio(data, 'extra_ns_per_item'):.2f} / "
              f"{_ratio(data, 'median_extra_ns_per_item'):.2f}   "
              f"batch {extra['batch'] / 1000:.2f} µs")
        paired = sorted((b - o) / data["items_per_window"]
                        for b, o in zip(data["window_ns"]["bridge"], data["window_ns"][OTHER], strict=True))
        quarter = len(paired) // 4
        print(f"  {'':<18} paired, bridge - {OTHER} in the same round: median {_us(paired[len(paired) // 2])}"
              f" (middle half {_us(paired[quarter])} to {_us(paired[-1 - quarter])}) per {data['unit']}")
        if data["problems"]:
            print(f"  {name}: PROBLEMS (figures may be wrong): {data['problems']}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0
