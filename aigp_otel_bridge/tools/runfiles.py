"""Reading the files the tools take (``verify``, ``explain``): one loader, one walker over inputs.

The files come from elsewhere (a lineage backend's export, a governance store), so everything
read from them is treated as data: the loader bounds the size it reads and names the file, line
and reason of anything it cannot use; ``printable`` makes any text from them safe to print on
a terminal (no control characters, no escape sequences).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigp_otel_bridge.facets import GOVERNANCE_FACET_KEY, RESOURCE_FACET_KEY

MAX_INPUT_BYTES = 256 * 1024 * 1024
"""Largest file the tools read; larger ones (or endless ones such as ``/dev/zero``) are refused."""
_CHUNK = 1024 * 1024
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters, terminal escapes and bidirectional overrides shown as
    ``\\xNN`` / ``\\uNNNN`` escapes (newlines too, unless ``keep_newlines``)."""
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    text = _UNPRINTABLE.sub(escape, text)
    return text if keep_newlines else text.replace("\n", "\\n").replace("\t", "\\t")


class InputFileError(Exception):
    """An input file that cannot be read or parsed; the command line turns it into exit code 2."""

    def __str__(self) -> str:
        return printable(super().__str__())


@dataclass(frozen=True)
class Located:
    """A JSON object read from a file, with where it was found (for messages)."""

    source: str
    value: dict[str, Any]


def read_text(path: str | Path, max_bytes: int = MAX_INPUT_BYTES, *, allow_nul: bool = False) -> str:
    """A UTF-8 text file of at most ``max_bytes``; ``InputFileError`` saying why not. A NUL byte
    (never in JSON) ends the reading at once unless ``allow_nul``."""
    name = str(path)
    chunks: list[bytes] = []
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                if not allow_nul and b"\x00" in chunk:
                    offset = size + chunk.index(0)
                    raise InputFileError(f"{name}: not a text file (NUL byte at offset {offset})")
                size += len(chunk)
                if size > max_bytes:
                    raise InputFileError(f"{name}: larger than {max_bytes // (1024 * 1024)} MiB; not read")
                chunks.append(chunk)
    except OSError as error:
        raise InputFileError(f"{name}: cannot read the file: {error.strerror or error}") from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{name}: not UTF-8 text") from None


def parse_json_documents(text: str, name: str) -> list[Located]:
    """JSON objects from one document (an object or an array of objects) or from JSON lines.

    Raises ``InputFileError`` naming the file, line and reason on anything else.
    """
    if not text.strip():
        raise InputFileError(f"{name}: the file is empty")
    try:
        document = json.loads(text)
    except RecursionError:
        raise InputFileError(f"{name}: JSON nested too deeply") from None
    except json.JSONDecodeError as error:
        if error.msg != "Extra data":
            raise InputFileError(f"{name}: not valid JSON at line {error.lineno}: {error.msg}") from None
        return _json_lines(text, name)
    if isinstance(document, list):
        return [_object(item, f"{name}[{index}]") for index, item in enumerate(document)]
    first_line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    return [_object(document, f"{name}:{first_line}")]


def _json_lines(text: str, name: str) -> list[Located]:
    found: list[Located] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except RecursionError:
            raise InputFileError(f"{name}:{number}: JSON nested too deeply") from None
        except json.JSONDecodeError as error:
            raise InputFileError(f"{name}:{number}: not valid JSON: {error.msg}") from None
        found.append(_object(value, f"{name}:{number}"))
    return found


def _object(value: object, source: str) -> Located:
    if not isinstance(value, dict):
        raise InputFileError(f"{source}: expected a JSON object, got {type(value).__name__}")
    return Located(source, value)


def load_json_file(path: str | Path, max_bytes: int = MAX_INPUT_BYTES) -> list[Located]:
    """Read a JSON or JSON-lines file of objects, with errors a user can act on."""
    return parse_json_documents(read_text(path, max_bytes), str(path))


def governance_facet_of(event: Mapping[str, Any]) -> object:
    """The ``aigp_governance`` facet of a RunEvent, or None when it has none."""
    run = event.get("run")
    facets = run.get("facets") if isinstance(run, Mapping) else None
    return facets.get(GOVERNANCE_FACET_KEY) if isinstance(facets, Mapping) else None


def governed_inputs(event: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Each input dataset of a RunEvent that carries an ``aigp_resource`` facet, with that facet;
    anything malformed on the way is skipped."""
    found: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    inputs = event.get("inputs")
    for dataset in inputs if isinstance(inputs, list) else []:
        facets = dataset.get("inputFacets") if isinstance(dataset, Mapping) else None
        facet = facets.get(RESOURCE_FACET_KEY) if isinstance(facets, Mapping) else None
        if isinstance(facet, Mapping):
            found.append((dataset, facet))
    return found


def is_aigp_event(document: Mapping[str, Any]) -> bool:
    """Whether a document looks like a full AIGP event (a governance store's record), as opposed to
    an OpenLineage RunEvent: for telling a user who gave one file for the other."""
    return "event_type" in document and "governance_hash" in document and "run" not in document


def is_run_event(document: Mapping[str, Any]) -> bool:
    """Whether a document looks like an OpenLineage RunEvent (``eventType`` and a ``run`` object)."""
    return "eventType" in document and isinstance(document.get("run"), Mapping)
