"""Validation of emitted events against the official schemas the project carries.

The schemas and example events are copies kept in ``tests/data`` (origin, version and license in
``tests/data/README.md``), so that a clone anywhere checks every event. Every facet is validated
against the schema its ``_schemaURL`` names, resolved locally; a facet whose schema is not in the
folder fails the test.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SCHEMAS_DIR = DATA_DIR / "schemas"
EXAMPLES_DIR = DATA_DIR / "examples"
RUN_EVENT_REF = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


@lru_cache(maxsize=1)
def _registry() -> Any:
    from referencing import Registry, Resource

    resources = []
    for path in sorted(SCHEMAS_DIR.rglob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


def _validator(ref: str) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator({"$ref": ref}, registry=_registry(), format_checker=FormatChecker())


def _facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = list((event.get("run", {}).get("facets") or {}).items())
    found += list((event.get("job", {}).get("facets") or {}).items())
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        for group in ("facets", "inputFacets", "outputFacets"):
            found += list((dataset.get(group) or {}).items())
    return found


def validate_run_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless the event and each facet are valid."""
    _validator(RUN_EVENT_REF).validate(event)
    for key, facet in _facets(event):
        url = facet.get("_schemaURL")
        assert isinstance(url, str) and "#" in url, f"facet {key} has no resolvable _schemaURL: {url!r}"
        _validator(url).validate(facet)


def load_examples() -> dict[str, dict[str, Any]]:
    folder = EXAMPLES_DIR / "aigp-events"
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}
