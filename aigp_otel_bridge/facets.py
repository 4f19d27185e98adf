"""The AIGP facets as openlineage-python facet classes.

Defined the way the client's generated facets are (small ``attrs`` classes with
``_get_schema``), so the client's ``Serde`` serialises them like any standard facet.
Field names follow the facet schemas, hence the mixedCase.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import attr
from openlineage.client.generated.base import InputDatasetFacet, RunFacet

from aigp_otel_bridge.semconv import AIGP_FACET_SCHEMA_BASE, AIGP_FACET_SPEC_VERSION

GOVERNANCE_FACET_KEY = "aigp_governance"
RESOURCE_FACET_KEY = "aigp_resource"


@attr.define
class AIGPGovernanceRunFacet(RunFacet):
    """The aggregate governance proof of one run (``run.facets.aigp_governance``)."""

    governanceHash: str  # noqa: N815
    hashType: str  # noqa: N815
    agentId: str  # noqa: N815
    traceId: str  # noqa: N815
    leafCount: int | None = attr.field(default=None)  # noqa: N815
    enforcementResult: str | None = attr.field(default=None)  # noqa: N815
    dataClassification: str | None = attr.field(default=None)  # noqa: N815
    specVersion: str = attr.field(default=AIGP_FACET_SPEC_VERSION)  # noqa: N815
    eventCount: int | None = attr.field(default=None)  # noqa: N815
    deniedEventCount: int | None = attr.field(default=None)  # noqa: N815
    complete: bool = attr.field(default=True)
    agentIds: list[str] | None = attr.field(default=None)  # noqa: N815
    ungovernedResourceCount: int = attr.field(default=0)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return AIGP_FACET_SCHEMA_BASE + "AIGPGovernanceRunFacet.json#/$defs/AIGPGovernanceRunFacet"


@attr.define
class AIGPResourceInputFacet(InputDatasetFacet):
    """One governed resource as an input dataset (``inputs[].inputFacets.aigp_resource``)."""

    resourceType: str  # noqa: N815
    resourceName: str  # noqa: N815
    resourceVersion: int | None = attr.field(default=None)  # noqa: N815
    observedVersions: list[int] | None = attr.field(default=None)  # noqa: N815
    leafHash: str | None = attr.field(default=None)  # noqa: N815
    contentHash: str | None = attr.field(default=None)  # noqa: N815
    leafHashes: list[str] | None = attr.field(default=None)  # noqa: N815
    contentHashes: list[str] | None = attr.field(default=None)  # noqa: N815
    enforcementResult: str = attr.field(default="allowed")  # noqa: N815
    governed: bool = attr.field(default=True)
    provider: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return AIGP_FACET_SCHEMA_BASE + "AIGPResourceInputFacet.json#/$defs/AIGPResourceInputFacet"


class FacetRecord(Mapping[str, Any]):
    """A facet as an ``attrs`` record with exactly the fields it has, read like the dict it was
    made from (``facet["complete"]``, ``dict(facet)``, ``facet == {...}``).

    Why a record and not the dict: the client's ``Serde`` starts with ``attr.asdict``, which
    copies an attrs record's plain fields in one loop but calls itself on every key and every
    value of a dict. With exactly the fields present (no ``None`` for ``Serde`` to drop) the JSON
    is the dict's, byte for byte, for about 30 µs less per RunEvent (docs/performance.md).
    Classes are made once per key tuple by ``facet_record``.
    """

    __slots__ = ()
    _keys: ClassVar[tuple[str, ...]]
    _key_set: ClassVar[frozenset[str]]

    def __getitem__(self, key: str) -> Any:
        if key in self._key_set:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as the dict it stands for (its class is made at run time)."""
        return facet_record, (dict(self),)


_RECORD_CLASSES: dict[tuple[str, ...], type[FacetRecord] | None] = {}
_RECORD_CLASSES_MAX = 256
"""Facets come in a few shapes (which optional fields are present); past this many, plain dicts."""


def facet_record(facet: dict[str, Any]) -> FacetRecord | dict[str, Any]:
    """``facet`` as a ``FacetRecord`` (the same JSON from ``Serde``), or unchanged when its keys
    cannot be fields (not identifiers, or names a mapping already uses)."""
    keys = tuple(facet)
    try:
        record_class = _RECORD_CLASSES[keys]
    except KeyError:
        record_class = _record_class(keys)
    return facet if record_class is None else record_class(*facet.values())


def _record_class(keys: tuple[str, ...]) -> type[FacetRecord] | None:
    """The record class of ``keys``, made and kept once; None (the dict) when the keys cannot be
    fields, and for any new tuple once the bound is reached, so no class is made per event."""
    if len(_RECORD_CLASSES) >= _RECORD_CLASSES_MAX:
        return None
    fits = all(
        isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)
        and not key.startswith("__") and not hasattr(FacetRecord, key)
        for key in keys
    ) and len({key.lstrip("_") for key in keys}) == len(keys)  # attrs names arguments without "_"
    record_class: type[FacetRecord] | None = None
    if fits:
        try:
            record_class = attr.make_class(
                "FacetRecord", list(keys), bases=(FacetRecord,), slots=True, eq=False, weakref_slot=False,
            )
            record_class._keys = keys
            record_class._key_set = frozenset(keys)
        except Exception:  # names this attrs refuses: the dict serialises the same, so no run is lost
            record_class = None
    _RECORD_CLASSES[keys] = record_class
    return record_class
