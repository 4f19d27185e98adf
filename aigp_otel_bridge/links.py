"""Links between runs (bridge contract, section 8): who called whom, and the top of the chain.

A run's identity (run id, job namespace and name) must be known on the application's thread
while its local root is still open, so that a call it makes can carry that identity to the callee
(``AIGPLineagePropagator``). ``RunLinks`` is the small, bounded, thread-safe registry that makes
this possible: the span processor notes each local root when it starts; the propagator asks for
the identity of the current local root; the run-naming code asks for the job name fixed for the
run, and for the run's parent. It is also the one place that fixes a run's job name: whichever
asks first (a propagation, or the naming of the run) fixes it, and every later ask gets the same.

Only run ids and job names ever leave through here: never governance hashes, denial reasons or
the names of governed resources.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from openlineage.client.generated.parent_run import Job, ParentRunFacet, Root, RootJob, RootRun, Run

from aigp_otel_bridge.semconv import utf8_safe
from aigp_otel_bridge.telemetry import RateLimitedLog, Stats, register_metrics

_log = logging.getLogger("aigp_otel_bridge")

OPENLINEAGE_CONTEXT = "OPENLINEAGE_CONTEXT"
HEADER = "aigp-lineage"
"""The propagated header (one field, so that carriers such as HTTP headers stay small)."""
HEADER_VERSION = "1"
MAX_NAME_LENGTH = 1024
"""Longest job namespace or name accepted from a header or ``OPENLINEAGE_CONTEXT``."""
MAX_HEADER_LENGTH = 8 * 1024
_HEX_RUN_ID = re.compile(r"[0-9a-f]{32}")
_ENCODED_TEXT = re.compile(r"(?:[A-Za-z0-9_~-]|%[0-9A-F]{2})+")


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """A run as OpenLineage names it: run id (canonical UUID), job namespace and job name."""

    run_id: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class RunParent:
    """What a called run knows of its callers: the run that called it and the top of the chain."""

    parent: RunIdentity
    root: RunIdentity


JobNamer = Callable[[Any], "tuple[str, str]"]
"""Names a local root's job ``(namespace, name)`` from the live root span."""


# ---- the parent facet ----


def parent_run_facet(link: RunParent, producer: str) -> ParentRunFacet:
    """The OpenLineage ``parent`` run facet (2-0-2 ``ParentRunFacet``, with ``root``)."""
    parent, root = link.parent, link.root
    return ParentRunFacet(
        run=Run(runId=parent.run_id),
        job=Job(namespace=parent.namespace, name=parent.name),
        root=Root(run=RootRun(runId=root.run_id), job=RootJob(namespace=root.namespace, name=root.name)),
        producer=producer,
    )


# ---- the header: compact, versioned, URL-safe ----


def _encode_text(text: str) -> str:
    """Percent-encoding that leaves only ``A-Z a-z 0-9 _ ~ -`` unescaped (``.`` separates fields)."""
    return quote(text, safe="").replace(".", "%2E")


def _encode_identity(identity: RunIdentity) -> str:
    return ".".join(
        (uuid.UUID(identity.run_id).hex, _encode_text(identity.namespace), _encode_text(identity.name))
    )


def encode_header(link: RunParent) -> str:
    """``1.<run>.<namespace>.<name>[.<root run>.<root namespace>.<root name>]``: run ids as 32
    lowercase hex digits, names percent-encoded; the root is left out when it is the run itself."""
    parts = [HEADER_VERSION, _encode_identity(link.parent)]
    if link.root != link.parent:
        parts.append(_encode_identity(link.root))
    return ".".join(parts)


def _decode_text(text: str) -> str | None:
    if not _ENCODED_TEXT.fullmatch(text):
        return None
    try:
        decoded = unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None
    return decoded if 0 < len(decoded) <= MAX_NAME_LENGTH else None


def _decode_identity(run_hex: str, namespace: str, name: str) -> RunIdentity | None:
    if not _HEX_RUN_ID.fullmatch(run_hex):
        return None
    decoded_namespace, decoded_name = _decode_text(namespace), _decode_text(name)
    if decoded_namespace is None or decoded_name is None:
        return None
    return RunIdentity(str(uuid.UUID(hex=run_hex)), decoded_namespace, decoded_name)


def decode_header(value: object) -> RunParent | None:
    """The ``RunParent`` a header value carries, or None when it is not a well-formed version 1."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
        return None
    parts = value.split(".")
    if parts[0] != HEADER_VERSION or len(parts) not in (4, 7):
        return None
    parent = _decode_identity(*parts[1:4])
    root = _decode_identity(*parts[4:7]) if len(parts) == 7 else parent
    if parent is None or root is None:
        return None
    return RunParent(parent, root)


# ---- OPENLINEAGE_CONTEXT ----


def _name(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH and utf8_safe(value):
        return value
    return None


def _identity(run: object, job: object) -> RunIdentity | None:
    if not (isinstance(run, Mapping) and isinstance(job, Mapping)):
        return None
    run_id = run.get("runId")
    namespace, name = _name(job.get("namespace")), _name(job.get("name"))
    if not isinstance(run_id, str) or len(run_id) > 64 or namespace is None or name is None:
        return None
    try:
        canonical = str(uuid.UUID(run_id))
    except ValueError:
        return None
    return RunIdentity(canonical, namespace, name)


def parse_openlineage_context(text: str) -> RunParent | None:
    """OpenLineage's parent context, ``{"parent": {"run": {"runId"}, "job": {"namespace", "name"},
    "root": {"run", "job"}}}``; no root means the parent is the top of the chain. None when
    malformed (any part of it)."""
    if len(text) > MAX_HEADER_LENGTH:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    parent_part = document.get("parent") if isinstance(document, Mapping) else None
    if not isinstance(parent_part, Mapping):
        return None
    parent = _identity(parent_part.get("run"), parent_part.get("job"))
    root_part = parent_part.get("root")
    if root_part is None:
        root = parent
    elif isinstance(root_part, Mapping):
        root = _identity(root_part.get("run"), root_part.get("job"))
    else:
        root = None
    if parent is None or root is None:
        return None
    return RunParent(parent, root)


# ---- the registry ----


class _SpanRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to an open root span that knows the root's key: a root that never ends
    and is dropped by the application must not be kept alive, nor its entry, by the registry."""

    __slots__ = ("key",)
    key: tuple[int, int]


@dataclass(slots=True)
class _Root:
    """One local root of this process, from its start until its run is decided."""

    remote: bool
    """Its parent is in another process (else it is a top-level run of this process)."""
    parent: RunParent | None
    """The caller's identity the root was started with, when one was propagated."""
    span: _SpanRef | None
    """The root span while it is open (its name and attributes name the job); then None."""
    namer: JobNamer | None
    job: tuple[str, str] | None = None
    run_id: str | None = None
    """Computed the first time it is needed: most runs are never propagated."""


class RunLinks:
    """Open local roots by ``(trace id, span id)``, their parents and their fixed job names.

    Bounded: at most ``max_roots`` open roots and as many ended ones are remembered, the oldest
    forgotten first (a forgotten run is named from its spans, as without propagation). An open
    root is held weakly and forgotten once the application drops it without ending it; an ended
    root is remembered only when its run has something to keep (a fixed job or a parent).
    """

    def __init__(self, max_roots: int = 10_000) -> None:
        self._max = max_roots
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[int, int], _Root] = OrderedDict()
        self._open_by_trace: dict[int, list[int]] = {}
        self._ended: OrderedDict[tuple[int, int], _Root] = OrderedDict()
        self._dropped: deque[tuple[int, int]] = deque()
        """Keys of open roots collected without ending (appended by weakref callbacks)."""
        self._environment: tuple[str | None, RunParent | None] | None = None
        self.stats = Stats()
        self.log = RateLimitedLog(_log)
        register_metrics(self, self.stats, {})
        if hasattr(os, "register_at_fork"):  # a fork while another thread held the lock
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    # -- the span processor, at a local root's start and end --

    def root_started(
        self, trace_id: int, span_id: int, remote: bool, parent: RunParent | None, span: Any, namer: JobNamer
    ) -> None:
        """Note a local root that has just started (the first registration of a root wins).

        On the application's thread for every local root: nothing is computed here that a run
        may never need (run id, job name, ``OPENLINEAGE_CONTEXT``)."""
        key = (trace_id, span_id)
        reference = _SpanRef(span, self._dropped_root)
        reference.key = key
        with self._lock:
            self._forget_dropped()
            if key in self._open or key in self._ended:
                return
            self._open[key] = _Root(remote, parent, reference, namer)
            self._open_by_trace.setdefault(trace_id, []).append(span_id)
            while len(self._open) > self._max:
                (old_trace, old_span), _ = self._open.popitem(last=False)
                self._forget_open(old_trace, old_span)

    def root_ended(self, trace_id: int, span_id: int) -> None:
        """The root ended: forget its span, keep its identity for the naming of its run."""
        key = (trace_id, span_id)
        with self._lock:
            entry = self._open.pop(key, None)
            if entry is None:
                return
            self._forget_open(trace_id, span_id)
            entry.span = entry.namer = None  # the reference goes, and with it its callback
            if entry.job is None and entry.parent is None:
                return  # nothing fixed, nothing to link: the run is named from its spans
            self._ended[key] = entry
            while len(self._ended) > self._max:
                self._ended.popitem(last=False)

    def _dropped_root(self, reference: _SpanRef) -> None:
        """A weakref callback (any thread, any moment): only queue the key, never take the lock."""
        self._dropped.append(reference.key)

    def _forget_dropped(self) -> None:
        while self._dropped:
            key = self._dropped.popleft()
            entry = self._open.get(key)
            if entry is not None and (entry.span is None or entry.span() is None):
                del self._open[key]
                self._forget_open(*key)

    def _forget_open(self, trace_id: int, span_id: int) -> None:
        spans = self._open_by_trace.get(trace_id)
        if spans is not None:
            if span_id in spans:
                spans.remove(span_id)
            if not spans:
                del self._open_by_trace[trace_id]

    # -- the propagator, on the application's thread --

    def propagated(self, trace_id: int, span_id: int) -> RunParent | None:
        """What a call made now from span ``span_id`` carries: the identity of the run of its local
        root (as the callee's parent) and the chain's root. None when no local root is known.

        The local root is the span itself when it is one; otherwise the trace's open local root in
        this process, and when the trace re-entered this process (a service calling itself), the
        one that started last, i.e. the innermost of a chain of calls.
        """
        with self._lock:
            entry = self._open.get((trace_id, span_id))
            if entry is None:
                spans = self._open_by_trace.get(trace_id)
                if not spans:
                    return None
                span_id = spans[-1]
                entry = self._open[(trace_id, span_id)]
            job = entry.job
        if job is None:
            job = self._fix_job(entry, None)
        if entry.run_id is None:
            entry.run_id = _run_id(trace_id, span_id, entry.remote)
        identity = RunIdentity(entry.run_id, *job)
        parent = self._parent(entry.parent, entry.remote)
        return RunParent(identity, parent.root if parent is not None else identity)

    # -- the run-naming code, on the bridge's worker --

    def run_link(
        self, trace_id: int | str, span_id: int, remote: bool, job: tuple[str, str]
    ) -> tuple[tuple[str, str], RunParent | None]:
        """The job ``(namespace, name)`` of a local root's run and its parent. The first job fixed
        for the root wins (a propagated identity names the job later emitted); when none was
        fixed yet, ``job`` is fixed now. The parent is the propagated caller, else, for a
        top-level run (``remote`` False), the one ``OPENLINEAGE_CONTEXT`` names."""
        entry = None
        if isinstance(trace_id, int):
            key = (trace_id, span_id)
            with self._lock:
                entry = self._open.get(key) or self._ended.get(key)
        if entry is None:
            return job, self._parent(None, remote)
        return self._fix_job(entry, job), self._parent(entry.parent, remote)

    def _parent(self, propagated: RunParent | None, remote: bool) -> RunParent | None:
        return propagated if propagated is not None or remote else self.environment_parent()

    def _fix_job(self, entry: _Root, fallback: tuple[str, str] | None) -> tuple[str, str]:
        if entry.job is not None:
            return entry.job
        job = fallback
        span = entry.span() if entry.span is not None else None
        namer = entry.namer
        if span is not None and namer is not None:
            try:
                job = namer(span)
            except Exception:
                self.log.log(logging.ERROR, "job", "could not name a root's job", exc_info=True)
        with self._lock:
            if entry.job is None:
                entry.job = job or ("default", "unknown_service.session")
                entry.namer = None
            return entry.job

    # -- OPENLINEAGE_CONTEXT --

    def environment_parent(self, environ: Mapping[str, str] | None = None) -> RunParent | None:
        """The parent that ``OPENLINEAGE_CONTEXT`` gives every top-level run of the process.

        Parsed once per value: a malformed value is ignored, warned about and counted once.
        """
        text = (os.environ if environ is None else environ).get(OPENLINEAGE_CONTEXT) or None
        known = self._environment
        if known is not None and known[0] == text:
            return known[1]
        parent = None if text is None else parse_openlineage_context(text)
        if text is not None and parent is None:
            self.rejected(OPENLINEAGE_CONTEXT)
        self._environment = (text, parent)
        return parent

    def rejected(self, source: str) -> None:
        """Count a malformed lineage context and say so (rate-limited); it is ignored."""
        self.stats.lineage_context_rejected += 1
        self.log.log(logging.WARNING, "lineage-context", "ignored a malformed %s value", source)


def _run_id(trace_id: int, span_id: int, remote: bool) -> str:
    """The run id the bridge gives a local root's run (``lineage`` owns the rule)."""
    from aigp_otel_bridge.lineage import run_id_for_remote_root, run_id_for_trace  # lineage imports us

    trace_hex = f"{trace_id:032x}"
    return run_id_for_remote_root(trace_hex, f"{span_id:016x}") if remote else run_id_for_trace(trace_hex)


RUN_LINKS = RunLinks()
"""The process's registry: the propagator is process-wide, so the roots it reads are too."""
