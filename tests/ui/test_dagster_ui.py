"""The Dagster UI for real: `dagster dev` on workspace.yaml, its GraphQL API, headless Chromium.

One `dagster dev` serves the whole module, over a private DAGSTER_HOME and a lake that holds only
the fixed bronze Parquet of tests/dbt/lakefixture.py, so no Kafka broker is needed: the `lake` and
`quality` groups are materialized the way the UI's "Materialize all" button does it, and the
bronze assets upstream are never executed. Chromium is driven over its DevTools protocol (one
browser for the module; each page is waited on until the text it must show is there).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from sentinel.settings import PROJECT_ROOT
from tests.dbt.lakefixture import (
    ALERTS,
    DEAD_LETTERS,
    EVENTS,
    EXPECTED_HOST_ACTIVITY,
    TOPICS,
    write_bronze,
)
from tests.orchestration.test_definitions import GROUPS

CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "orchestration.definitions"  # workspace.yaml names the location after its module
REPOSITORY = "__repository__"  # what Dagster calls the one repository of a Definitions object
WIDTH, HEIGHT = 1600, 1000

GATED = ("host_activity_5m", "silver_events", "dns_domain_stats", "alert_rollup_daily")

# Log lines that are about Dagster itself, not about the code location.
BENIGN_LOG_LINES = (
    # `dagster dev` points at its successor, `dg dev`, on every start.
    re.compile(r"SupersessionWarning: Function `dev_command` is superseded"),
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUSPECT = re.compile(
    r" - (WARNING|ERROR|CRITICAL) - "  # Dagster's loggers (webserver, daemon, code server)
    r"|^(WARNING|ERROR|CRITICAL):"  # the root logger's default format
    r"|\[WARNING\]"  # dbt
    r"|\w+Warning: "  # warnings.warn: path:line: Category: message
    r"|^Traceback "
)

LOAD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
PAGE_TIMEOUT_S = 60
LOADING = ("Loading...", "Loading…")  # the webapp's two spellings of a pending query


# --------------------------------------------------------------------------- dagster dev


@dataclass
class Dagster:
    """A running `dagster dev`: its URL, log file and state folder, and a GraphQL client."""

    url: str
    log: Path
    state: Path
    client: httpx.Client

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), json.dumps(body["errors"], indent=2)
        return body["data"]  # type: ignore[no-any-return]

    def log_lines(self) -> list[str]:
        return [ANSI.sub("", line) for line in self.log.read_text(errors="replace").splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(home: Path, state: Path) -> dict[str, str]:
    """This shell's environment without any SENTINEL_/DAGSTER_ setting, then the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "DAGSTER_"))}
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "SENTINEL_STATE_DIR": str(state),
            # The fixture's events are from 2026-12-03: the freshness gate is not under test.
            "SENTINEL_LAKE_FRESHNESS_HOURS": "1000000",
            # No lag sensor or hourly schedule starting runs of their own.
            "SENTINEL_LAKE_AUTOMATION": "false",
            "SENTINEL_DAGSTER_EXECUTOR": "in_process",
            # Nothing may need a broker: a port nobody listens on makes a stray client fail fast.
            "SENTINEL_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "SENTINEL_KAFKA_EXTERNAL": "true",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _location_loaded(dagster: Dagster) -> dict[str, Any] | None:
    """The workspace entry of the code location once it has finished loading, else None."""
    data = dagster.graphql(
        """{ workspaceOrError { __typename
               ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename
                   ... on PythonError { message stack }
                   ... on RepositoryLocation { name repositories { name } } } } }
               ... on PythonError { message } } }"""
    )
    workspace = data["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    for entry in workspace["locationEntries"]:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            return entry  # type: ignore[no-any-return]
    return None


@pytest.fixture(scope="module")
def dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dagster]:
    """`dagster dev -w workspace.yaml` over a bronze-only lake, until the module is done."""
    root = tmp_path_factory.mktemp("dagster-ui")
    home, state = root / "dagster-home", root / "state"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        # the "Join the Dagster community" dialog would cover the screenshots
        "nux:\n  enabled: false\n"
    )
    write_bronze(state / "lake", TOPICS, EVENTS, ALERTS, DEAD_LETTERS)

    port = _free_port()
    log = root / "dagster-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=_environment(home, state),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = httpx.Client(timeout=60)
    instance = Dagster(f"http://127.0.0.1:{port}", log, state, client)
    try:
        _wait_until_loaded(instance, process)
        yield instance
    finally:
        client.close()
        _stop(process)


def _wait_until_loaded(dagster: Dagster, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{_tail(dagster.log)}")
        try:
            dagster.client.get(f"{dagster.url}/server_info").raise_for_status()
            entry = _location_loaded(dagster)
        except httpx.HTTPError:
            entry = None
        if entry is not None:
            loaded = entry["locationOrLoadError"]
            if loaded["__typename"] == "PythonError":
                pytest.fail(
                    f"{LOCATION} failed to load:\n{loaded['message']}{''.join(loaded['stack'])}"
                )
            return
        time.sleep(1)
    pytest.fail(f"dagster dev did not load {LOCATION} in {LOAD_TIMEOUT_S}s:\n{_tail(dagster.log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group (webserver, daemon, code servers, run workers), then SIGKILL
    to whatever of it outlived the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _tail(log: Path, lines: int = 60) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(ANSI.sub("", text).splitlines()[-lines:])


# --------------------------------------------------------------------------- Chromium


class Page:
    """One tab, spoken to over the DevTools protocol (commands in, matching replies out)."""

    def __init__(self, websocket: ClientConnection) -> None:
        self._ws = websocket
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page; None while a navigation swaps the document."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply["result"].get("value")

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def open(self, url: str, *, shows: tuple[str, ...], hides: tuple[str, ...] = LOADING) -> str:
        """Navigate, then wait until the DOM holds every string of `shows` and none of `hides`
        (by default: no node of the page still loading its data); returns that DOM."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            dom = self.dom()
            missing = [text for text in shows if text not in dom]
            pending = [text for text in hides if text in dom]
            if not missing and not pending:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{url} after {PAGE_TIMEOUT_S}s: missing {missing}, still showing {pending}"
                )
            time.sleep(0.5)
        time.sleep(1)  # let the layout and the fonts settle before the shot
        return self.dom()

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the viewport, written to `path` (and the DOM beside it, for a failed test)."""
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        path.with_suffix(".html").write_text(self.dom())
        return png


@dataclass
class Browser:
    devtools: str
    shots: Path

    @contextlib.contextmanager
    def page(self) -> Iterator[Page]:
        """A new tab, closed on the way out."""
        response = httpx.put(f"{self.devtools}/json/new?about:blank", timeout=30)
        response.raise_for_status()
        target = response.json()
        try:
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                yield Page(ws)
        finally:
            httpx.get(f"{self.devtools}/json/close/{target['id']}", timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Debian Chromium with a DevTools port, for the whole module."""
    if not CHROMIUM.exists():
        message = "Debian chromium is not installed: apt-get install chromium"
        if os.environ.get("CI"):  # .ci/run installs it: in CI a missing browser is a failure
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("chromium")
    profile = root / "profile"
    log = root / "chromium.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port:\n{_tail(log)}")
            time.sleep(0.2)
        port = int(active.read_text().split()[0])
        yield Browser(f"http://127.0.0.1:{port}", root)
    finally:
        _stop(process)
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------- PNG (stdlib only)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _png_colors(png: bytes, rows: int = 200) -> int:
    """Distinct colours in the first `rows` scanlines of an 8-bit RGB(A) PNG (unfiltered)."""
    width, _height = _png_size(png)
    bit_depth, color_type = png[24], png[25]
    assert bit_depth == 8 and color_type in (2, 6), (bit_depth, color_type)
    bpp = 3 if color_type == 2 else 4
    chunks, at = [], 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        if kind == b"IDAT":
            chunks.append(png[at + 8 : at + 8 + length])
        at += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    colors: set[bytes] = set()
    for y in range(rows):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up = previous[x]
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                corner = previous[x - bpp] if x >= bpp else 0
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + predictor) & 0xFF
        colors.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp))
        previous = line
    return len(colors)


def _assert_real_screenshot(png: bytes) -> None:
    assert len(png) > 30_000, f"a {len(png)}-byte screenshot is too small to hold a rendered page"
    assert _png_size(png) == (WIDTH, HEIGHT)
    # a blank or half-loaded page is one or two colours; text, icons and anti-aliasing are many
    assert _png_colors(png) > 50


# --------------------------------------------------------------------------- the run


ASSET_NODES = """
query ($group: AssetGroupSelector!) {
  assetNodes(group: $group) {
    assetKey { path }
    jobNames
    assetChecksOrError { ... on AssetChecks { checks { name jobNames } } }
  }
}"""

LAUNCH = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
  }
}"""

RUN_STATUS = "query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"

RUN_ERRORS = """
query ($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey level }
        ... on ExecutionStepFailureEvent {
          error { message stack errorChain { error { message stack } } }
        }
        ... on RunFailureEvent { pipelineName }
      }
    }
  }
}"""


def materialize_all_params(dagster: Dagster, groups: tuple[str, ...]) -> dict[str, Any]:
    """The executionParams the UI's "Materialize all" sends for these groups' assets.

    As the webapp builds them (LaunchAssetExecutionButton): the first job every selected asset
    belongs to (the implicit `__ASSET_JOB`), every selected asset, and every check on them that
    can run in that job.
    """
    nodes = []
    for group in groups:
        selector = {
            "groupName": group,
            "repositoryName": REPOSITORY,
            "repositoryLocationName": LOCATION,
        }
        nodes += dagster.graphql(ASSET_NODES, group=selector)["assetNodes"]
    jobs = [job for job in nodes[0]["jobNames"] if all(job in n["jobNames"] for n in nodes)]
    assert jobs, "the selected assets share no job"
    job = jobs[0]
    checks = [
        {"name": check["name"], "assetKey": {"path": node["assetKey"]["path"]}}
        for node in nodes
        for check in node["assetChecksOrError"].get("checks", [])
        if not check["jobNames"] or job in check["jobNames"]
    ]
    return {
        "mode": "default",
        "executionMetadata": {"tags": []},
        "runConfigData": "{}",
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "pipelineName": job,
            "assetSelection": [{"path": node["assetKey"]["path"]} for node in nodes],
            "assetCheckSelection": checks,
        },
    }


def _run_errors(dagster: Dagster, run_id: str) -> str:
    """The run's ERROR events and step failures with their Python errors, for a failed run."""
    events = dagster.graphql(RUN_ERRORS, runId=run_id)["logsForRun"].get("events", [])
    lines = []
    for event in events:
        if event.get("level") in ("ERROR", "CRITICAL") or event.get("error"):
            lines.append(f"[{event.get('stepKey') or 'run'}] {event.get('message', '')}")
        if event.get("error"):
            # the step's error, then what caused it; the innermost one with its traceback
            chain = [event["error"], *(link["error"] for link in event["error"]["errorChain"])]
            lines += [error["message"].rstrip() for error in chain]
            lines.append("".join(chain[-1]["stack"] or []))
    return "\n".join(lines) or "(no error events)"


@dataclass
class Run:
    id: str
    status: str
    params: dict[str, Any]
    seconds: float


def materialize_all(dagster: Dagster, groups: tuple[str, ...]) -> Run:
    """Launch what "Materialize all" launches for `groups`, and wait for the run to end."""
    params = materialize_all_params(dagster, groups)
    started = time.monotonic()
    launched = dagster.graphql(LAUNCH, executionParams=params)["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["id"]
    status = "QUEUED"
    while time.monotonic() - started < RUN_TIMEOUT_S:
        status = dagster.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    return Run(run_id, status, params, time.monotonic() - started)


@pytest.fixture(scope="module")
def lake_run(dagster: Dagster) -> Run:
    """One "Materialize all" of the lake and quality groups, successful."""
    run = materialize_all(dagster, ("lake", "quality"))
    if run.status != "SUCCESS":
        pytest.fail(
            f"run {run.id} is {run.status} after {run.seconds:.0f}s:\n{_run_errors(dagster, run.id)}"
        )
    return run


# --------------------------------------------------------------------------- tests


def test_the_code_location_loads_without_errors_or_warnings(dagster: Dagster) -> None:
    entry = _location_loaded(dagster)
    assert entry is not None
    loaded = entry["locationOrLoadError"]
    assert loaded["__typename"] == "RepositoryLocation", loaded
    assert [r["name"] for r in loaded["repositories"]] == [REPOSITORY]

    suspect = [
        line
        for line in dagster.log_lines()
        if SUSPECT.search(line) and not any(p.search(line) for p in BENIGN_LOG_LINES)
    ]
    assert not suspect, "dagster dev logged warnings or errors:\n" + "\n".join(suspect)


def test_the_asset_graph_has_every_asset_of_the_ingest_lake_and_quality_groups(
    dagster: Dagster,
) -> None:
    nodes = dagster.graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    groups: dict[str, set[str]] = {}
    for node in nodes:
        groups.setdefault(node["groupName"], set()).add("/".join(node["assetKey"]["path"]))
    assert groups == GROUPS

    jobs = dagster.graphql(
        """query ($selector: RepositorySelector!) {
             repositoryOrError(repositorySelector: $selector) {
               ... on Repository { jobs { name } } } }""",
        selector={"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION},
    )["repositoryOrError"]["jobs"]
    assert {"lake_hourly", "land_bronze"} <= {job["name"] for job in jobs}


def test_chromium_renders_the_lake_asset_graph(dagster: Dagster, browser: Browser) -> None:
    with browser.page() as page:
        dom = page.open(
            f"{dagster.url}/locations/{LOCATION}/asset-groups/lake",
            shows=("host_activity_5m", "silver_events", "host_features_5m", "feast_repository"),
        )
        png = page.screenshot(browser.shots / "asset-graph.png")
    assert "Materialize all" in dom
    assert "Join the Dagster community" not in dom  # the dialog is off (nux: enabled: false)
    _assert_real_screenshot(png)


def test_materialize_all_builds_the_lake_and_passes_every_check(
    dagster: Dagster, lake_run: Run
) -> None:
    selected = {"/".join(a["path"]) for a in lake_run.params["selector"]["assetSelection"]}
    assert selected == GROUPS["lake"] | GROUPS["quality"]
    assert lake_run.params["selector"]["pipelineName"] == "__ASSET_JOB"

    nodes = dagster.graphql(
        """query ($keys: [AssetKeyInput!]) {
             assetNodes(assetKeys: $keys) {
               assetKey { path }
               assetMaterializations(limit: 1) { runId }
               assetChecksOrError { ... on AssetChecks { checks {
                 name executionForLatestMaterialization { runId status } } } } } }""",
        keys=[{"path": [name]} for name in GATED],
    )["assetNodes"]
    assert {n["assetKey"]["path"][0] for n in nodes} == set(GATED)
    for node in nodes:
        name = node["assetKey"]["path"][0]
        assert [m["runId"] for m in node["assetMaterializations"]] == [lake_run.id], name
        checks = {
            c["name"]: c["executionForLatestMaterialization"]
            for c in node["assetChecksOrError"]["checks"]
        }
        assert f"{name}_quality_check" in checks, sorted(checks)
        failed = {
            check: execution
            for check, execution in checks.items()
            if execution != {"runId": lake_run.id, "status": "SUCCEEDED"}
        }
        assert not failed, f"{name}: {failed}"


def test_the_gold_table_holds_the_hand_computed_host_activity(
    dagster: Dagster, lake_run: Run
) -> None:
    con = duckdb.connect(str(dagster.state / "lake" / "lake.duckdb"), read_only=True)
    try:
        (count,) = con.execute("SELECT count(*) FROM gold.host_activity_5m").fetchone() or (0,)
    finally:
        con.close()
    assert count == len(EXPECTED_HOST_ACTIVITY) == 4


def test_chromium_shows_host_activity_5m_materialized_by_that_run(
    dagster: Dagster, browser: Browser, lake_run: Run
) -> None:
    with browser.page() as page:
        dom = page.open(
            f"{dagster.url}/assets/host_activity_5m",
            shows=("host_activity_5m", "Latest materialization", lake_run.id[:8]),
        )
        png = page.screenshot(browser.shots / "host_activity_5m.png")
    assert "Never materialized" not in dom
    _assert_real_screenshot(png)
