"""``aigp-otel-bridge report``: the verified lineage as one self-contained HTML page, checked as
HTML and in a real headless Chromium (Debian's ``chromium``, driven by playwright)."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigp_otel_bridge.tools.report import build_report
from aigp_otel_bridge.tools.runfiles import Located
from tests.agent_chains import by_job, read_lines, run_three_agents, write_lines

HOSTILE_JOB = '<img src="http://127.0.0.1:{port}/leak-job">\x1b[31mlibrarian</b>\u202e'
HOSTILE_INPUT = "<script>document.title='owned'</script>{port}\x07"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ORDER = ("planner", "researcher", "librarian")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chain")
    run_three_agents(directory)
    return directory


class _Elements(HTMLParser):
    """Every element of a page, with its attributes, and all its text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


def _tamper(folder: Path, port: int | str) -> list[dict[str, Any]]:
    """The chain's lineage with a failed verification (a changed content hash on the researcher),
    a hostile job name (the librarian) and a hostile input name; the denial stays as recorded."""
    events = copy.deepcopy(by_job(read_lines(folder / "lineage.jsonl")))
    research = events["researcher"]
    for dataset in research["inputs"]:
        facet = dataset["inputFacets"]["aigp_resource"]
        if dataset["name"] == "tool.search_filings":
            facet["contentHash"] = "0" * 64
    librarian = events["librarian"]
    librarian["job"]["name"] = HOSTILE_JOB.format(port=port)
    name = HOSTILE_INPUT.format(port=port)
    librarian["inputs"].append({
        "namespace": "acme.agents", "name": name,
        "inputFacets": {"aigp_resource": {"resourceType": "tool", "resourceName": name, "governed": False}},
    })
    return [events["planner"], research, librarian]


def test_hostile_names_are_text_and_the_page_fetches_nothing(chain: Path) -> None:
    lineage = [Located(f"l:{n}", e) for n, e in enumerate(_tamper(chain, 8080))]
    report, page = build_report(lineage, read_lines(chain / "store.jsonl"))
    assert not report.ok
    parsed = _parse(page)
    tags = {tag for tag, _ in parsed.elements}
    assert not tags & {"script", "img", "link", "iframe", "object", "embed", "image", "use", "foreignobject"}
    assert not [a for _, attrs in parsed.elements for name, a in attrs.items() if name.startswith("on")]
    hrefs = [attrs.get("href") for _, attrs in parsed.elements if "href" in attrs]
    assert hrefs and all(str(h).startswith("#run-") for h in hrefs)  # only links inside the page
    text = "".join(parsed.text)
    assert '<img src="http://127.0.0.1:8080/leak-job">\\x1b[31mlibrarian</b>\\u202e' in text
    assert "<script>document.title='owned'</script>8080\\x07" in text
    assert "\x1b" not in page and "\u202e" not in page and "\x07" not in page
    (csp,) = [a["content"] for t, a in parsed.elements if t == "meta" and a.get("http-equiv")]
    assert csp is not None and csp.startswith("default-src 'none'")


def _synthetic_chain(agents: int, inputs: int) -> list[Located]:
    """A chain of ``agents`` runs in one trace, each called by the previous one; the last run has
    ``inputs`` inputs, one of them denied and one observed only."""
    trace = uuid.uuid4().hex
    runs = [str(uuid.uuid4()) for _ in range(agents)]
    events = []
    for index, run_id in enumerate(runs):
        facets: dict[str, Any] = {"aigp_governance": {"traceId": trace, "agentId": f"agent.a{index}",
                                                      "enforcementResult": "allowed", "deniedEventCount": 0}}
        if index:
            facets["parent"] = {
                "run": {"runId": runs[index - 1]}, "job": {"namespace": "ns", "name": f"a{index - 1}.task"},
                "root": {"run": {"runId": runs[0]}, "job": {"namespace": "ns", "name": "a0.task"}},
            }
        many = inputs if index == agents - 1 else 2
        datasets = [
            {"namespace": "ns", "name": f"tool.t{n:03}", "inputFacets": {"aigp_resource": {
                "resourceType": "tool", "resourceName": f"tool.t{n:03}",
                "contentHash": hashlib.sha256(str(n).encode()).hexdigest(),
                "enforcementResult": "denied" if n == 7 else "allowed", "governed": n != 9}}}
            for n in range(many)
        ]
        value = {"eventType": "COMPLETE", "run": {"runId": run_id, "facets": facets},
                 "job": {"namespace": "ns", "name": f"a{index}.task"}, "inputs": datasets}
        events.append(Located(f"chain.jsonl:{index + 1}", value))
    return events


def test_a_chain_of_twenty_agents_with_five_hundred_inputs_stays_readable() -> None:
    report, page = build_report(_synthetic_chain(20, 500), None)
    assert report.ok, report.render()
    parsed = _parse(page)
    classes = [str(attrs.get("class", "")) for _, attrs in parsed.elements]
    assert sum(c.startswith("node run") for c in classes) == 20
    assert sum(c.startswith("edge") for c in classes) == 19
    assert sum(c == "input governed" for c in classes) == 20 * 2 - 2 + 500 - 2
    details = [attrs for tag, attrs in parsed.elements if tag == "details"]
    assert len(details) == 20 and not any("open" in attrs for attrs in details)  # inputs collapsed
    text = "".join(parsed.text)
    assert "500 input(s): 498 governed, 1 observed-only, 1 denied" in text
    svg = next(attrs for tag, attrs in parsed.elements if tag == "svg")
    assert float(str(svg["height"])) > 20 * 92  # one layer per agent, parents above children
    assert "links verified; hashes not checked" in text


def _report(*args: str | Path, code: str = "") -> subprocess.CompletedProcess[str]:
    command = ["-c", code] if code else ["-m", "aigp_otel_bridge.tools.cli"]
    return subprocess.run(
        [sys.executable, *command, "report", *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_report_of_links_alone_and_its_errors(chain: Path, tmp_path: Path) -> None:
    page = tmp_path / "links.html"
    result = _report("--lineage", chain / "lineage.jsonl", "-o", page)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {page}: 3 run(s) in 1 chain(s), verified" in result.stdout
    text = "".join(_parse(page.read_text(encoding="utf-8")).text)
    assert "links verified; hashes not checked (no governance store given)" in text
    assert "3 runs" in text and "1 denied actions" in text

    unlinked = write_lines(tmp_path / "one.jsonl", read_lines(chain / "lineage.jsonl")[:1])
    nothing = _report("--lineage", unlinked, "-o", tmp_path / "one.html")
    assert nothing.returncode == 1  # nothing verified is not a success, and the page says so
    shown = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert "NOT VERIFIED: no run in the lineage file has a parent facet" in shown

    missing = _report("--lineage", tmp_path / "absent.jsonl", "-o", tmp_path / "x.html")
    assert missing.returncode == 2 and "absent.jsonl: cannot read the file" in missing.stderr
    unwritable = _report("--lineage", chain / "lineage.jsonl", "-o", tmp_path / "no" / "such" / "x.html")
    assert unwritable.returncode == 2 and "cannot write the report" in unwritable.stderr

    without_layout = (  # as if the report extra were not installed
        "import sys; sys.modules['grandalf'] = None"
        "; from aigp_otel_bridge.tools.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    refused = _report("--lineage", chain / "lineage.jsonl", "-o", tmp_path / "y.html", code=without_layout)
    assert refused.returncode == 2
    assert refused.stderr == (
        'aigp-otel-bridge report: needs grandalf, which is not installed: install the "report" extra'
        ' (in a clone: pip install -e ".[report]")\n'
    )


# ---- in a real browser ----


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (Debian's), through playwright; skipped without one, outside CI."""
    in_ci = os.environ.get("CI") == "true"
    if not Path(CHROMIUM).exists():
        if in_ci:
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("no chromium on this machine (apt-get install chromium); CI runs this test")
    if in_ci:
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


class _Recorder(SimpleHTTPRequestHandler):
    """Serves the report's folder on loopback and records every path asked for."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[tuple[int, list[str], Path]]:
    """A web server on 127.0.0.1 for ``tmp_path / "site"``: (port, paths requested, folder)."""
    site = tmp_path / "site"
    site.mkdir()
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen, site
    finally:
        server.shutdown()
        server.server_close()


def test_the_report_in_a_real_browser(
    chain: Path, tmp_path: Path, browser_page: Any, loopback: tuple[int, list[str], Path]
) -> None:
    port, seen, site = loopback
    lineage = write_lines(tmp_path / "lineage.jsonl", _tamper(chain, port))
    result = subprocess.run(
        [sys.executable, "-m", "aigp_otel_bridge.tools.cli", "report", "--lineage", str(lineage),
         "--aigp-events", str(chain / "store.jsonl"), "-o", str(site / "report.html")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the failed verification
    assert "3 run(s) in 1 chain(s), FAILED" in result.stdout
    events = by_job(read_lines(chain / "lineage.jsonl"))
    planner, researcher, librarian = (events[name]["run"]["runId"] for name in ORDER)

    page = browser_page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    url = f"http://127.0.0.1:{port}/report.html"
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    assert requests == [url]  # the page itself, and nothing it asked for
    assert seen == ["/report.html"]
    assert page.title() == "Verified lineage"  # no script ran

    # the graph: three runs and the two parent -> child edges of the chain
    nodes = page.locator("svg g.node.run")
    assert nodes.count() == 3
    assert {nodes.nth(i).get_attribute("data-run-id") for i in range(3)} == {planner, researcher, librarian}
    for i in range(3):
        assert nodes.nth(i).is_visible()
    edges = page.locator("svg path.edge")
    pairs = {(edges.nth(i).get_attribute("data-parent"), edges.nth(i).get_attribute("data-child"))
             for i in range(edges.count())}
    assert pairs == {(planner, researcher), (researcher, librarian)}
    root = page.locator("svg g.node.root")
    assert root.count() == 1 and root.get_attribute("data-run-id") == planner

    # a failed verification and a denied input, visible as such
    failed = page.locator(f'svg g.node.failed[data-run-id="{researcher}"]')
    assert failed.is_visible() and "FAILED" in (failed.text_content() or "")
    card = page.locator(f'section.card[data-run-id="{researcher}"]')
    assert card.get_attribute("data-verdict") == "failed"
    reasons = card.locator("ul.reasons")
    assert reasons.is_visible()
    assert "content_hash[tool:tool.search_filings]" in reasons.inner_text()
    librarian_card = page.locator(f'section.card[data-run-id="{librarian}"]')
    denied = librarian_card.locator("ul.problems li", has_text="tool.download_archive")
    assert denied.is_visible() and "denied" in denied.inner_text()
    row = librarian_card.locator('tr.input[data-marking="denied"]')
    assert row.count() == 1 and "tool.download_archive" in (row.text_content() or "")
    assert page.locator("#result").get_attribute("data-ok") == "false"
    assert "FAILED" in page.locator("#result").inner_text()
    assert page.locator('[data-stat="denied actions"] b').inner_text() == "1"

    # hostile names are text: no element came from them, their markup and escapes are shown
    assert page.locator("img").count() == 0 and page.locator("script").count() == 0
    job = HOSTILE_JOB.format(port=port).replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
    assert job in librarian_card.locator("h3").inner_text()
    librarian_card.locator("details summary").click()
    shown = HOSTILE_INPUT.format(port=port).replace("\x07", "\\x07")
    assert librarian_card.locator("td.name", has_text=shown).is_visible()
    assert seen == ["/report.html"]  # opening the inputs fetched nothing either

    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- whatever the files hold ----

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["COMPLETE", "denied"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_ids = st.sampled_from([str(uuid.UUID(int=n)) for n in range(3)]) | _json
_run = st.fixed_dictionaries({"runId": _ids}, optional={"facets": st.fixed_dictionaries({}, optional={
    "parent": _json | st.fixed_dictionaries({
        "run": st.fixed_dictionaries({"runId": _ids}),
        "job": st.fixed_dictionaries({"namespace": _json, "name": _json}),
        "root": _json,
    }),
    "aigp_governance": _json | st.fixed_dictionaries({"traceId": st.just("ab" * 16) | _json, "agentId": _json,
                                                      "agentIds": _json, "complete": _json}),
})})
_event = st.fixed_dictionaries({"run": _run | _json}, optional={
    "job": st.fixed_dictionaries({"namespace": st.just("ns"), "name": st.sampled_from(["a", "b"]) | _json}),
    "eventType": _json, "inputs": _json | st.lists(st.fixed_dictionaries({"name": _json}, optional={
        "inputFacets": st.fixed_dictionaries({"aigp_resource": _json})}), max_size=3),
})
_store = st.lists(st.fixed_dictionaries({"trace_id": st.just("ab" * 16)}, optional={
    "agent_id": _json, "governance_hash": _json}), max_size=3)


@settings(deadline=None, max_examples=150)  # accounting, never timing
@given(st.lists(_event, max_size=5), _store | st.none())
def test_malformed_lineage_never_crashes_the_chains_or_the_report(events: list[Any], store: Any) -> None:
    lineage = [Located(f"l:{n}", event) for n, event in enumerate(events)]
    report, page = build_report(lineage, store)
    assert report.chains is not None and page.startswith("<!DOCTYPE html>")
    assert report.chains.to_json()["runs"] == len(report.chains.runs)
    assert isinstance(report.render(), str)
