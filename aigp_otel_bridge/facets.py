"""The AIGP facets as openlineage-python facet classes.

Defined the way the client's generated facets are (``attrs`` classes deriving from the client's
facet bases, with ``_get_schema``), so they are made, read, copied and serialised like any
standard facet: the base sets and checks ``_producer`` and ``_schemaURL``, and the client's
``Serde`` leaves out the optional fields that are None. Field names follow the facet schemas, hence
the mixedCase.
"""

from __future__ import annotations

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
