"""Two checkouts of the bridge in one run: ``python -m bench compare COMMIT_OR_PATH``.

Before/after figures taken in separate runs move with the machine's load by more than most
changes are worth. Here the package of another checkout is imported beside this one and becomes
one more configuration, ``other``, interleaved round by round with ``none``, ``batch`` and
``bridge`` in the span and session measurements (each processor alone, on spans made beforehand,
as in ``python -m bench``). The other checkout is a commit of this repository (its
``aigp_otel_bridge`` folder is unpacked with ``git archive`` into a temporary folder, removed
afterwards) or a folder holding an ``aigp_otel_bridge`` package. The report gives each one's
extra CPU per item, each one's guard ratio (against the batch processor or the hand-built event
of the same rounds), the ratio ``bridge / other`` (min and median of rounds), and the paired
figure that noise disturbs least: per round, ``bridge`` minus ``other`` (adjacent windows), its
median and middle half over the rounds. ``--without-genai`` drops the ``gen_ai.*`` attributes of
the child spans, for a checkout from before GenAI spans became inputs (contract section 9): both
then emit the same RunEvents.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from aigp_otel_bridge import AIGPLineageSpanProcessor
from bench import timing, workloads
from bench.guard import limit_of

PACKAGE = "aigp_otel_bridge"
OTHER = "other"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE = {
    "ungoverned_span": ("batch", "median_extra_ns_per_item"),
    "governed_span": ("batch", "median_ns_per_item"),
    "governed_session": ("hand_built", "median_ns_per_item"),
}
"""What each measurement's guard ratio divides by (``bench.guard``): the batch processor's extra
over no processor, the whole cost of a span under the batch processor, or the hand-built event."""


def unpack_commit(commit: str, into: Path) -> bool:
    """The package as it is at ``commit`` of this repository, unpacked into ``into``; False when
    ``commit`` names no commit (or this is no git clone)."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", f"{commit}^{{commit}}", PACKAGE],
                                 cwd=PROJECT_ROOT, capture_output=True, check=False, timeout=120)
    except OSError:  # no git
        return False
    if archive.returncode != 0:
        return False
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python before the extraction filters: git's own archive of this repository
            tar.extractall(into)
    return True


def _package_modules() -> dict[str, Any]:
    return {name: module for name, module in sys.modules.items()
            if name == PACKAGE or name.startswith(PACKAGE + ".")}


def load_processor(tree: Path) -> type[AIGPLineageSpanProcessor]:
    """The span processor class of the package in ``tree``, imported beside this one.

    The package's modules are taken out of ``sys.modules`` while the other copy is imported, then
    put back; the other copy's functions keep their own module globals, so both run side by side.
    """
    if not (tree / PACKAGE / "__init__.py").is_file():
        raise SystemExit(f"compare: {tree} holds no {PACKAGE} package (and names no commit)")
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


def _guard_ratio(name: str, case: dict[str, Any], config: str) -> float:
    """The median guard ratio of ``config`` in these rounds."""
    reference, statistic = REFERENCE[name]
    per_item = case[statistic]
    return float(case["median_extra_ns_per_item"][config] / per_item[reference]) if per_item[reference] > 0 \
        else float("nan")


def _us(ns: float) -> str:
    return f"{ns / 1000:+.2f} µs"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.splitlines()[0])
    parser.add_argument("other", metavar="COMMIT_OR_PATH",
                        help="a commit of this repository (e.g. e5ce9f9), or a folder holding the other "
                        "checkout's aigp_otel_bridge")
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
    unpacked = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        tree = Path(args.other)
        if not tree.is_dir() and unpack_commit(args.other, unpacked):
            tree = unpacked
        others = {OTHER: load_processor(tree)}
        cases = {
            "ungoverned_span": timing.measure_spans(
                "ungoverned_span", args.spans, args.rounds, governed=False,
                beforehand=limit_of("ungoverned_span").made_beforehand, others=others),
            "governed_span": timing.measure_spans(
                "governed_span", args.spans, args.rounds, governed=True,
                beforehand=limit_of("governed_span").made_beforehand, others=others),
            "governed_session": timing.measure_sessions(
                args.sessions, args.rounds, beforehand=limit_of("governed_session").made_beforehand,
                others=others),
        }
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    results = {name: case.to_json() for name, case in cases.items()}
    print(f"extra CPU per item, this checkout (bridge) and {args.other} ({OTHER}); min / median of "
          f"{args.rounds} interleaved rounds; spans made as the guard defines each line")
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
        ours, theirs = _guard_ratio(name, data, "bridge"), _guard_ratio(name, data, OTHER)
        print(f"  {'':<18} guard ratio (median, over {REFERENCE[name][0]}): "
              f"bridge {ours:.2f}, {OTHER} {theirs:.2f}")
        if data["problems"]:
            print(f"  {name}: PROBLEMS (figures may be wrong): {data['problems']}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0
