"""The package's shape: imports run one way, and the documentation lists what the code declares."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

import aigp_otel_bridge
from aigp_otel_bridge.config import DEFAULT_PRODUCER, ENV_PREFIX, GATEWAY_VARIABLES, SETTINGS, BridgeConfig
from aigp_otel_bridge.telemetry import COUNTERS, GAUGES

PACKAGE = Path(aigp_otel_bridge.__file__).parent
ROOT = PACKAGE.parent
NAME = PACKAGE.name


# ---- imports -----------------------------------------------------------------------------


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Package modules this one imports anywhere (``TYPE_CHECKING`` blocks and functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` needs the module; ``from module import name``, the module.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(module, path, set(modules)) for module, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 20
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


STAGES = ["stages.extract", "stages.correlate", "stages.aggregate", "stages.build", "stages.deliver"]


@pytest.mark.parametrize("position", range(len(STAGES)))
def test_each_stage_imports_only_earlier_stages(position: int) -> None:
    graph = _graph()
    stage = f"{NAME}.{STAGES[position]}"
    forbidden = {f"{NAME}.{name}" for name in [*STAGES[position + 1 :], "engine", "frontdoors"]}
    if position < STAGES.index("stages.build"):  # settings reach the pipeline as plain arguments
        forbidden.add(f"{NAME}.config")
    assert (PACKAGE / "stages").is_dir()
    assert not _reaches(graph, stage) & forbidden


def test_aggregation_does_not_depend_on_correlation() -> None:
    # The builder API and ``verify`` aggregate records that no correlator ever held.
    assert f"{NAME}.stages.correlate" not in _reaches(_graph(), f"{NAME}.stages.aggregate")


def test_the_runtime_never_imports_the_tools() -> None:
    graph = _graph()
    tools = f"{NAME}.tools"
    runtime = [m for m in graph if not m.startswith(tools) and m != f"{NAME}.__main__"]
    for module in runtime:
        assert not {m for m in _reaches(graph, module) if m.startswith(tools)}, module


def test_extraction_is_a_leaf() -> None:
    allowed = {f"{NAME}.{m}" for m in ("semconv", "merkle", "note", "memo")}
    assert _reaches(_graph(), f"{NAME}.stages.extract") <= allowed


def _names_used(path: Path) -> set[str]:
    """Every name a module imports, reads or reaches as an attribute."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name for alias in node.names)
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def test_build_reaches_no_process_global_registry() -> None:
    """``build`` is given the run links by its caller; it never reads the process's ``RUN_LINKS``."""
    assert "RUN_LINKS" not in _names_used(PACKAGE / "stages" / "build.py")
    assert "RUN_LINKS" in _names_used(PACKAGE / "engine.py")  # the caller that passes it


def _forbidden_uses(path: Path) -> set[str]:
    """``object.__new__``, ``object.__setattr__`` and ``make_class`` wherever a module names them
    (called, or kept under another name), docstrings aside."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            if (owner, node.attr) in {("object", "__new__"), ("object", "__setattr__")}:
                found.add(f"object.{node.attr}")
            elif node.attr == "make_class":
                found.add("make_class")
        elif isinstance(node, ast.Name):
            if node.id == "make_class":
                found.add("make_class")
        elif isinstance(node, ast.ImportFrom):
            found.update("make_class" for alias in node.names if alias.name == "make_class")
    return found


def test_no_constructor_is_skipped_and_no_class_is_made_at_run_time() -> None:
    """Objects of the client's classes and of the bridge's go through their constructors (and
    validators); no class is made while the bridge runs."""
    for module, path in _modules().items():
        assert not _forbidden_uses(path), module


# ---- the documentation against the declarations ------------------------------------------


def _table_rows(path: Path, first_cell: str) -> list[list[str]]:
    """The rows of every Markdown table in ``path`` whose header starts with ``first_cell``."""
    rows: list[list[str]] = []
    in_table = False
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            in_table = True
        elif in_table and not set(cells[0]) <= {"-", ":"}:
            rows.append(cells)
    return rows


def _code_names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _default_text(name: str) -> str | None:
    """How a numeric or boolean default is written in the docs: ``10 000``, ``300``, ``false``."""
    default = {f.name: f.default for f in fields(BridgeConfig)}[name]
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int):
        return f"{default:,}".replace(",", " ")
    if isinstance(default, float):
        return f"{default:g}"
    return None


def test_configuration_md_lists_every_setting_with_its_variable_and_default() -> None:
    rows = _table_rows(ROOT / "docs" / "configuration.md", "argument")
    documented = {}
    for cells in rows:
        (name,) = _code_names(cells[0])
        documented[name] = cells
    assert set(documented) == set(SETTINGS)
    for name, cells in documented.items():
        assert _code_names(cells[1]) == [ENV_PREFIX + name.upper()]
        expected = _default_text(name)
        if expected is not None:
            assert cells[2].strip("`") == expected, name
    assert DEFAULT_PRODUCER in documented["producer"][2]


def test_readme_lists_every_setting() -> None:
    rows = _table_rows(ROOT / "README.md", "argument")
    named = {name for cells in rows for name in _code_names(cells[0])}
    documented = {name for name in named if re.fullmatch(r"[a-z_]+", name)} - {"client"}
    assert documented == set(SETTINGS)


def test_every_bridge_variable_named_in_the_docs_exists() -> None:
    variables = {ENV_PREFIX + name.upper() for name in SETTINGS} | set(GATEWAY_VARIABLES)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(re.findall(rf"\b{ENV_PREFIX}[A-Z_]*[A-Z]\b", path.read_text()))
        assert named <= variables, f"{path.name}: {sorted(named - variables)}"


def test_zero_code_md_names_the_settings_a_zero_code_user_needs() -> None:
    text = (ROOT / "docs" / "zero-code.md").read_text()
    for name in ("job_namespace", "job_name", "trace_timeout_s", "shutdown_timeout_s", "outbox_dir"):
        assert ENV_PREFIX + name.upper() in text


def test_operations_md_lists_every_counter_and_gauge() -> None:
    rows = _table_rows(ROOT / "docs" / "operations.md", "instrument")
    documented = {}
    for cells in rows:
        (instrument,) = _code_names(cells[0])
        documented[instrument.removeprefix("aigp_bridge.")] = cells[1]
    assert documented == {**dict.fromkeys(COUNTERS, "counter"), **dict.fromkeys(GAUGES, "gauge")}
