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
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import quote, unquote

from openlineage.client.generated.parent_run import Job, ParentRunFacet, Root, RootJob, RootRun, Run

from aigp_otel_bridge import semconv as sc
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


JobNamer = Callable[[Any, "str | None"], "tuple[str, str]"]
"""Names a local root's job ``(namespace, name)`` from the live root span and the name of the
first agent that started under it (None when none did, or none was named at its start)."""


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


class _OpenRoot(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to an open local root span: everything else about the root (span id,
    remote parent, name, attributes) is read from the span itself while it is alive, so an open
    root costs one small object. A root the application drops without ending is not kept alive."""

    __slots__ = ("agent", "namer", "outer", "trace_id")
    trace_id: int
    namer: JobNamer
    outer: _OpenRoot | None
    """The trace's previously started open root in this process (a trace that re-entered it)."""
    agent: str | None
    """The name of the first agent span started under the root, as its start named it."""


@dataclass(slots=True)
class _Link:
    """What a root's run must keep beyond its spans: its propagated caller, its fixed job."""

    parent: RunParent | None = None
    job: tuple[str, str] | None = None


def _span_id(span: Any) -> int:
    return int(span.get_span_context().span_id)


def _remote(span: Any) -> bool:
    """A local root's parent is either absent or remote."""
    return span.parent is not None


class RunLinks:
    """Open local roots by trace id, and the links of their runs by ``(trace id, span id)``.

    Bounded: at most ``max_roots`` runs' links are remembered (the oldest forgotten first: its run
    is then named from its spans, as without propagation, and loses a propagated parent). Open
    roots are held weakly and cost one small object each; a run gets a ``_Link`` only when it was
    called with a propagated identity or its job was fixed while its root was open.
    """

    def __init__(self, max_roots: int = 10_000) -> None:
        self._max = max_roots
        self._lock = threading.Lock()
        self._open: dict[int, _OpenRoot] = {}
        """The latest started open root of each trace; earlier ones through ``outer``."""
        self._links: dict[tuple[int, int], _Link] = {}
        self._dropped: deque[int] = deque()
        """Trace ids of open roots collected without ending (appended by weakref callbacks)."""
        self._on_dropped = self._dropped_root  # one bound method for every reference
        self._environment: tuple[str | None, RunParent | None] | None = None
        self.active = False
        """Set once a propagator exists: until then no call can carry a run's identity, so open
        roots are not noted at all (no cost on the application's thread, no memory)."""
        self.stats = Stats()
        self.log = RateLimitedLog(_log)
        register_metrics(self, self.stats, {})
        if hasattr(os, "register_at_fork"):  # a fork while another thread held the lock
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    # -- the span processor, at a local root's start and end --

    def root_started(
        self, trace_id: int, span_id: int, parent: RunParent | None, span: Any, namer: JobNamer
    ) -> None:
        """Note a local root that has just started (the first registration of a root wins).

        On the application's thread for every local root: nothing is computed or kept here that a
        run may never need (run id, job name, ``OPENLINEAGE_CONTEXT``)."""
        reference = _OpenRoot(span, self._on_dropped)
        reference.trace_id, reference.namer, reference.agent = trace_id, namer, None
        with self._lock:
            self._forget_dropped()
            outer = self._open.get(trace_id)
            if outer is not None and self._find(outer, span_id) is not None:
                return
            reference.outer = outer
            self._open[trace_id] = reference
            if parent is not None:
                self._keep((trace_id, span_id), _Link(parent))
            if len(self._open) > self._max:
                del self._open[next(iter(self._open))]

    def agent_started(self, trace_id: int, name: str) -> None:
        """An agent span named ``name`` started in the trace: the first one under the trace's
        innermost open root is the agent that root's run is named after (contract section 9, "One
        agent, one job"), as the outermost agent span is when the run is named from its spans."""
        with self._lock:
            latest = self._open.get(trace_id)
            if latest is not None and latest.agent is None:
                latest.agent = name

    def root_ended(self, trace_id: int, span_id: int) -> None:
        """The root ended: it is no longer open (its run's link, if any, stays for naming)."""
        with self._lock:
            latest = self._open.get(trace_id)
            if latest is None:
                return
            kept = [r for r in _chain(latest) if (s := r()) is not None and _span_id(s) != span_id]
            self._relink(trace_id, kept)

    def _relink(self, trace_id: int, roots: list[_OpenRoot]) -> None:
        """Make ``roots`` (latest first) the trace's open roots."""
        for inner, outer in pairwise(roots):
            inner.outer = outer
        if roots:
            roots[-1].outer = None
            self._open[trace_id] = roots[0]
        else:
            del self._open[trace_id]

    def _dropped_root(self, reference: _OpenRoot) -> None:
        """A weakref callback (any thread, any moment): only queue the trace, never take the lock."""
        self._dropped.append(reference.trace_id)

    def _forget_dropped(self) -> None:
        while self._dropped:
            trace_id = self._dropped.popleft()
            latest = self._open.get(trace_id)
            if latest is not None:
                self._relink(trace_id, [r for r in _chain(latest) if r() is not None])

    def _find(self, latest: _OpenRoot, span_id: int) -> _OpenRoot | None:
        return next((r for r in _chain(latest) if (s := r()) is not None and _span_id(s) == span_id), None)

    def _keep(self, key: tuple[int, int], link: _Link) -> _Link:
        link = self._links.setdefault(key, link)
        while len(self._links) > self._max:
            del self._links[next(iter(self._links))]
        return link

    # -- the propagator, on the application's thread --

    def propagated(self, trace_id: int, span_id: int) -> RunParent | None:
        """What a call made now from span ``span_id`` carries: the identity of the run of its local
        root (as the callee's parent) and the chain's root. None when no local root is known.

        The local root is the span itself when it is one; otherwise the trace's open local root in
        this process, and when the trace re-entered this process (a service calling itself), the
        one that started last, i.e. the innermost of a chain of calls.
        """
        with self._lock:
            latest = self._open.get(trace_id)
            if latest is None:
                return None
            found = self._find(latest, span_id) or next((r for r in _chain(latest) if r() is not None), None)
            root = found() if found is not None else None
        if found is None or root is None:
            return None
        root_span_id, remote = _span_id(root), _remote(root)
        job = self._fix_job((trace_id, root_span_id), root, found, None)
        identity = RunIdentity(_run_id(trace_id, root_span_id, remote), *job)
        with self._lock:
            link = self._links.get((trace_id, root_span_id))
        parent = self._parent(link.parent if link is not None else None, remote)
        return RunParent(identity, parent.root if parent is not None else identity)

    # -- the run-naming code, on the bridge's worker --

    def run_link(
        self, trace_id: int | str, span_id: int, remote: bool, job: tuple[str, str]
    ) -> tuple[tuple[str, str], RunParent | None]:
        """The job ``(namespace, name)`` of a local root's run and its parent. The first job fixed
        for the root wins (a propagated identity names the job later emitted); a root still open
        fixes its job now, from itself; otherwise ``job`` is the run's job. The parent is the
        propagated caller, else, for a top-level run (``remote`` False), the one
        ``OPENLINEAGE_CONTEXT`` names."""
        if not isinstance(trace_id, int):
            return job, self._parent(None, remote)
        key = (trace_id, span_id)
        with self._lock:
            link = self._links.get(key)
            latest = self._open.get(trace_id)
            found = self._find(latest, span_id) if latest is not None else None
            root = found() if found is not None else None
        if found is not None and root is not None:
            job = self._fix_job(key, root, found, job)
        elif link is not None and link.job is not None:
            job = link.job
        return job, self._parent(link.parent if link is not None else None, remote)

    def _fix_job(
        self, key: tuple[int, int], root: Any, found: _OpenRoot, fallback: tuple[str, str] | None
    ) -> tuple[str, str]:
        """The job of an open root's run, fixed the first time it is asked for: named from the root
        and the agent that started under it so far (an agent named later cannot change it)."""
        with self._lock:
            link = self._links.get(key)
            if link is not None and link.job is not None:
                return link.job
            agent = found.agent
        job = fallback
        try:
            job = found.namer(root, agent)
        except Exception:
            self.log.log(logging.ERROR, "job", "could not name a root's job", exc_info=True)
        with self._lock:
            link = self._keep(key, link or _Link())
            if link.job is None:
                link.job = job or ("default", "unknown_service.session")
            return link.job

    def _parent(self, propagated: RunParent | None, remote: bool) -> RunParent | None:
        return propagated if propagated is not None or remote else self.environment_parent()

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


RUN_ID_NAMESPACE = uuid.UUID("8c6b3c0e-5a7d-5d8e-9f0a-4b1c2d3e4f50")
"""Namespace of the name-based (uuid5) run ids: trace ids that are neither 32 hex nor a UUID,
and local roots whose parent is remote (``"<trace hex>/<span hex>"``)."""

_UUID_FORM = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def run_id_for_trace(trace_id: str) -> str:
    """The run id of a trace: its id as a canonical UUID, else a uuid5 of the (UTF-8-safe) text."""
    if sc.OTEL_TRACE_ID.fullmatch(trace_id):  # str(uuid.UUID(hex=trace_id)), written directly
        hex_id = trace_id.lower()
        return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    if _UUID_FORM.fullmatch(trace_id):
        return str(uuid.UUID(trace_id))
    return str(uuid.uuid5(RUN_ID_NAMESPACE, sc.clean_text(trace_id)))


def run_id_for_remote_root(trace_hex: str, span_hex: str) -> str:
    """The run id of a local root whose parent is remote: its own, never the trace's."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{trace_hex}/{span_hex}"))

def _chain(latest: _OpenRoot) -> list[_OpenRoot]:
    """A trace's open roots, latest first."""
    roots = []
    current: _OpenRoot | None = latest
    while current is not None:
        roots.append(current)
        current = current.outer
    return roots


def _run_id(trace_id: int, span_id: int, remote: bool) -> str:
    """The run id the bridge gives a local root's run."""
    trace_hex = f"{trace_id:032x}"
    return run_id_for_remote_root(trace_hex, f"{span_id:016x}") if remote else run_id_for_trace(trace_hex)


RUN_LINKS = RunLinks()
"""The process's registry: the propagator is process-wide, so the roots it reads are too."""
