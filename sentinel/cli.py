"""The `sentinel` command: the embedded broker, topics, contracts and scenario replay.

Each sub-command only wires settings to library code; `sentinel COMMAND --help` documents it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.table import Table

from agents.cli import app as agent_app
from evals.cli import app as evals_app
from sentinel.chaos.cli import app as chaos_app
from sentinel.console import err, out
from sentinel.console import fail as _fail
from sentinel.console import settings_or_exit as _settings
from sentinel.settings import Settings, get_settings
from sentinel.tracecli import app as trace_app
from services.gateway.cli import app as gateway_app
from services.policy.cli import app as policy_app

app = typer.Typer(
    name="sentinel",
    help="Sentinel Lab: security telemetry platform. Configure with SENTINEL_* variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="The embedded Kafka broker (KRaft, one node).", no_args_is_help=True)
topics_app = typer.Typer(help="The contract topics.", no_args_is_help=True)
contracts_app = typer.Typer(help="The message contracts (JSON Schemas).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(contracts_app, name="contracts")
rules_app = typer.Typer(help="Rule packs: golden tests and lint.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
lake_app = typer.Typer(
    help="The lake: Dagster jobs over bronze, silver and gold.", no_args_is_help=True
)
app.add_typer(lake_app, name="lake")
models_app = typer.Typer(
    help="The host-anomaly model: train (models_daily) and the registry's versions.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(agent_app, name="agent")
app.add_typer(gateway_app, name="gateway")
app.add_typer(policy_app, name="policy")
app.add_typer(evals_app, name="evals")
app.add_typer(trace_app, name="trace")
app.add_typer(chaos_app, name="chaos")
DEMO_EVENTS_PER_SECOND = 10.0


def _broker() -> Any:
    from sentinel.kafka import EmbeddedBroker

    return EmbeddedBroker(_settings(), say=lambda line: err.print(line, highlight=False))


# ------------------------------------------------------------------ kafka
@kafka_app.command("up")
def kafka_up(
    reset: Annotated[
        bool, typer.Option("--reset", help="wipe broker data before starting")
    ] = False,
) -> None:
    """Start the embedded broker (reuses a running one) and wait until it answers metadata."""
    from sentinel.kafka import BrokerError

    try:
        status = _broker().start(reset=reset)
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    out.print(status.describe(), highlight=False)


@kafka_app.command("down")
def kafka_down(
    reset: Annotated[bool, typer.Option("--reset", help="also wipe broker data")] = False,
) -> None:
    """Stop the broker this project started (its pid file); data is kept unless --reset."""
    from sentinel.kafka import BrokerError

    broker = _broker()
    if not broker.settings.kafka_embedded:
        out.print(f"external cluster at {broker.settings.kafka_bootstrap}: nothing to stop")
        return
    stopped = broker.stop()
    if not stopped:
        out.print("no broker started by this project is running")
    if reset:
        try:
            broker.reset()
        except BrokerError as exc:
            raise _fail(str(exc)) from None


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the broker runs. Exit code: 0 running or external, 3 stopped, 1 unresponsive."""
    status = _broker().status()
    out.print(status.describe(), highlight=False)
    raise typer.Exit({"running": 0, "external": 0, "stopped": 3}.get(status.state, 1))


@kafka_app.command("logs")
def kafka_logs(
    lines: Annotated[int, typer.Option("-n", "--lines", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing new lines")] = False,
) -> None:
    """Print where the broker logs are and their last lines."""
    broker = _broker()
    err.print(f"logs: {broker.logs_dir}", highlight=False)
    sys.stdout.write(broker.tail(lines) + "\n")
    sys.stdout.flush()
    if follow:
        with broker.log_file.open() as fh:
            fh.seek(0, 2)
            while True:
                line = fh.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)


# ----------------------------------------------------------------- topics
@topics_app.command("create")
def topics_create() -> None:
    """Create the contract topics that are missing (idempotent)."""
    from kafka.errors import KafkaError

    from sentinel.kafka import ensure_contract_topics

    settings = _settings()
    try:
        created, present = ensure_contract_topics(settings)
    except KafkaError as exc:
        raise _fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    for name in created:
        out.print(f"created  {name}")
    for name in present:
        out.print(f"exists   {name}")


@topics_app.command("list")
def topics_list() -> None:
    """Show the contract topics: partitions, key, value and topic-level configs."""
    from kafka.errors import KafkaError

    from sentinel.kafka import contract_topics, describe_topics
    from sentinel.kafka.clients import admin_client
    from sentinel.kafka.topics import message_counts

    settings = _settings()
    specs = contract_topics(settings)
    try:
        admin = admin_client(settings)
    except KafkaError as exc:
        raise _fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from None
    try:
        states = {s.name: s for s in describe_topics(admin, [t.name for t in specs])}
    finally:
        admin.close()
    counts = message_counts(settings, list(states))
    table = Table("topic", "partitions", "messages", "key", "value", "config")
    for spec in specs:
        state = states.get(spec.name)
        table.add_row(
            spec.name,
            str(state.partitions) if state else "[red]missing[/]",
            f"{counts.get(spec.name, 0):,}" if state else "",
            spec.key,
            spec.value,
            ", ".join(f"{k}={v}" for k, v in sorted(state.config.items())) if state else "",
        )
    out.print(table)
    if len(states) < len(specs):
        err.print("some topics are missing: run `sentinel topics create`")
        raise typer.Exit(1)


# -------------------------------------------------------------- contracts
@contracts_app.command("validate")
def contracts_validate(
    file: Annotated[Path, typer.Argument(help="a JSON Lines file", exists=True, dir_okay=False)],
    kind: Annotated[
        str | None,
        typer.Option(
            help="contract for every line (event, alert, rule-pack, triage); "
            "default: each line's `schema` field"
        ),
    ] = None,
    max_errors: Annotated[int, typer.Option(help="bad lines to print at most")] = 1000,
) -> None:
    """Validate every line of FILE; print each bad line (number, field, reason); exit 1 if any."""
    from sentinel.contracts import KINDS, validate_jsonl

    if kind is not None and kind not in KINDS:
        raise _fail(f"unknown contract '{kind}'; choose one of: {', '.join(KINDS)}", 2)
    started = time.perf_counter()
    report = validate_jsonl(file, kind, max_errors=max_errors)
    elapsed = time.perf_counter() - started
    for error in report.errors:
        out.print(f"{file}:{error}", highlight=False, markup=False)
    if report.bad > len(report.errors):
        out.print(f"... and {report.bad - len(report.errors)} more bad lines")
    rate = report.lines / elapsed if elapsed else 0.0
    summary = (
        f"{report.lines:,} lines: {report.valid:,} valid, {report.bad:,} bad "
        f"({elapsed:.2f}s, {rate:,.0f} lines/s)"
    )
    (err if report.bad else out).print(summary, highlight=False)
    if report.bad:
        raise typer.Exit(1)


# ------------------------------------------------------------------ rules
def _packs(paths: list[Path] | None) -> list[Path]:
    if paths:
        return paths
    from sentinel.settings import PROJECT_ROOT

    return sorted(p.parent for p in (PROJECT_ROOT / "rules").glob("*/pack.yaml"))


@rules_app.command("test")
def rules_test(
    packs: Annotated[
        list[Path] | None, typer.Argument(help="pack folders (default: rules/*)")
    ] = None,
    k: Annotated[
        str | None, typer.Option("-k", help="only cases whose rule id or name contains this")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="list passing cases too")
    ] = False,
) -> None:
    """Run the golden tests of rule packs; print a diff for each failing case; exit 1 on failure."""
    from sentinel.rules import PackError
    from sentinel.rules.testkit import run_pack_tests

    failed = 0
    for path in _packs(packs):
        try:
            suite = run_pack_tests(path, k)
        except PackError as exc:
            raise _fail(str(exc)) from None
        for case in suite.cases:
            if case.passed:
                if verbose:
                    out.print(f"[green]PASS[/] {case.rule_id}: {case.name}", highlight=False)
                continue
            out.print(f"[red]FAIL[/] {case.rule_id}: {case.name}  ({case.file})", highlight=False)
            out.print(case.diff(), highlight=False, markup=False)
        for error in suite.errors:
            out.print(f"[red]ERROR[/] {error}", highlight=False)
        failed += len(suite.failed) + len(suite.errors)
        passed = len(suite.cases) - len(suite.failed)
        out.print(
            f"pack {suite.pack.name} {suite.pack.version}: {len(suite.pack.rules)} rules, "
            f"{passed} passed, {len(suite.failed)} failed, {len(suite.errors)} errors",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@rules_app.command("lint")
def rules_lint(
    packs: Annotated[
        list[Path] | None, typer.Argument(help="pack folders (default: rules/*)")
    ] = None,
) -> None:
    """Check manifests against files, compile every rule, require tests and MITRE ids."""
    from sentinel.rules.testkit import lint_pack

    problems = 0
    for path in _packs(packs):
        found = lint_pack(path)
        for problem in found:
            out.print(problem, highlight=False, markup=False)
        problems += len(found)
        out.print(f"{path}: {'ok' if not found else f'{len(found)} problem(s)'}", highlight=False)
    if problems:
        raise typer.Exit(1)


@rules_app.command("publish")
def rules_publish(
    pack_dir: Annotated[
        Path, typer.Argument(help="a pack folder, e.g. rules/core", file_okay=False)
    ],
) -> None:
    """Publish a pack to sentinel.rules.v1 (key = pack name); running workers hot-reload it."""
    from kafka.errors import KafkaError

    from sentinel.kafka import RULES
    from sentinel.kafka.clients import producer
    from sentinel.rules import PackError, load_pack
    from sentinel.rules.testkit import lint_pack

    try:
        pack = load_pack(pack_dir)
    except PackError as exc:
        raise _fail(str(exc)) from None
    problems = [p for p in lint_pack(pack_dir) if "has no" not in p and "names no MITRE" not in p]
    if problems:
        raise _fail("the pack does not compile:\n" + "\n".join(problems))
    message = pack.message()
    message["published_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    settings = _settings()
    try:
        sender = producer(settings)
        record = sender.send(RULES, key=pack.name.encode(), value=orjson.dumps(message)).get(30)
        sender.close()
    except KafkaError as exc:
        raise _fail(f"cannot publish to {settings.kafka_bootstrap}: {exc!r}") from None
    out.print(
        f"published pack {pack.name} {pack.version} ({len(pack.rules)} rules) to {RULES} "
        f"at offset {record.offset}",
        highlight=False,
    )


# ----------------------------------------------------------------- replay
def _parse_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not an ISO 8601 time or 'now'") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def replay(
    scenario: Annotated[str, typer.Option(help="baseline, an attack name, or mixed")] = "mixed",
    count: Annotated[int, typer.Option(min=1, help="events to produce")] = 10_000,
    rate: Annotated[
        float | None,
        typer.Option(min=1, help="offered load in events/s (default: as fast as possible)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same events")] = 0,
    hosts: Annotated[int, typer.Option(min=1, help="hosts in the simulated fleet")] = 20,
    events_per_second: Annotated[
        float,
        typer.Option(min=0.01, help="the fleet's rate in event time (timestamps), not wall clock"),
    ] = 200.0,
    start: Annotated[
        str | None, typer.Option(help="event time of the first event (ISO 8601) or 'now'")
    ] = None,
    malformed: Annotated[
        int, typer.Option(min=0, help="malformed records to mix in (for dead-letter tests)")
    ] = 0,
    to: Annotated[
        Path | None, typer.Option("--to", help="write JSON Lines here instead of producing")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="topic (default sentinel.events.v1)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Generate a scenario's events and produce them to Kafka (key = host id), or write a file."""
    from agents.replay import replay_to_kafka, write_jsonl
    from agents.scenarios import SCENARIOS, UnknownScenarioError
    from sentinel.kafka import EVENTS
    from sentinel.progress import progress_reporter

    if scenario not in SCENARIOS:
        raise _fail(f"unknown scenario '{scenario}'; choose one of: {', '.join(SCENARIOS)}", 2)
    try:
        records = _scenario_records(
            scenario, count, seed, hosts, _parse_start(start), malformed, events_per_second
        )
    except UnknownScenarioError as exc:
        raise _fail(str(exc), 2) from None
    total = count + malformed
    with progress_reporter(f"replay {scenario}", total, enabled=not quiet) as progress:
        if to is not None:
            summary = write_jsonl(records, to, progress=progress)
        else:
            from kafka.errors import KafkaError

            settings = _settings()
            try:
                summary = replay_to_kafka(
                    records, settings, topic or EVENTS, rate=rate, progress=progress
                )
            except (KafkaError, OSError) as exc:
                raise _fail(
                    f"cannot produce to {settings.kafka_bootstrap}: {exc!r}. "
                    "Is the broker up? (sentinel kafka up)"
                ) from None
    out.print(summary.describe(), highlight=False)
    kinds = ", ".join(f"{k}={v:,}" for k, v in sorted(summary.by_kind.items()))
    out.print(f"by kind: {kinds}", highlight=False)
    if summary.errors:
        raise typer.Exit(1)


def _lake_log(settings: Settings, job: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return settings.lake_root / "logs" / f"{job}-{stamp}.log"


def _print_lake(settings: Settings, outcome: Any | None = None) -> None:
    from orchestration.lib.runs import layer_counts
    from sentinel.kafka import ALERTS, EVENTS, EVENTS_DLQ

    counts = Table("layer", "table", "rows", title="lake row counts")
    for layer, table, rows in layer_counts(
        settings, {"events": EVENTS, "alerts": ALERTS, "dlq": EVENTS_DLQ}
    ):
        counts.add_row(layer, table, "not built" if rows is None else f"{rows:,}")
    out.print(counts)
    if outcome is None:
        return
    gates = Table("asset", "gate", "result", title="quality gates (Great Expectations, blocking)")
    for check in outcome.gates:
        gates.add_row(
            check.asset,
            check.name,
            "[green]passed[/]" if check.passed else f"[red]FAILED[/] {check.description}",
        )
    out.print(gates)
    dbt_checks = [c for c in outcome.checks if not c.name.endswith("_quality_check")]
    failed = [c.name for c in dbt_checks if not c.passed]
    out.print(
        f"dbt tests as asset checks: {len(dbt_checks) - len(failed)} of {len(dbt_checks)} passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    out.print(
        f"run {outcome.run_id} ({outcome.job}): {'succeeded' if outcome.success else 'FAILED at ' + ', '.join(outcome.failed_steps)}; "
        f"reports in {settings.lake_root / 'reports'}\n",
        highlight=False,
    )


@lake_app.command("run")
def lake_run(
    job: Annotated[
        str, typer.Option(help="lake_hourly (land + dbt + gates) or land_bronze")
    ] = "lake_hourly",
) -> None:
    """Run a lake job now, in this process; it shows in the Dagster UI of `sentinel dev`."""
    from orchestration.lib.runs import run_job

    settings = _settings()
    log = _lake_log(settings, job)
    out.print(f"running {job} (lake at {settings.lake_root}); log: {log}", highlight=False)
    outcome = run_job(settings, job, log_file=log)
    _print_lake(settings, outcome)
    if not outcome.success:
        raise typer.Exit(1)


@models_app.command("train")
def models_train() -> None:
    """Run models_daily now: train a challenger, gate its promotion, compute drift."""
    from orchestration.lib.runs import run_job

    settings = _settings()
    log = _lake_log(settings, "models_daily")
    out.print(
        f"running models_daily (MLflow at {settings.mlflow_uri}); log: {log}", highlight=False
    )
    outcome = run_job(settings, "models_daily", log_file=log)
    _print_models(settings, outcome)
    if not outcome.success:
        raise typer.Exit(1)


@models_app.command("status")
def models_status() -> None:
    """The registered versions of the host-anomaly model, their aliases and promotion reasons."""
    _print_models(_settings())


def _print_models(settings: Settings, outcome: Any | None = None) -> None:
    from orchestration.lib.runs import model_versions

    table = Table("version", "aliases", "feature service", "PR-AUC", "threshold", "promotion")
    table.title = f"registered model {settings.models_name} ({settings.mlflow_uri})"
    for row in model_versions(settings):
        table.add_row(*row)
    out.print(table)
    if outcome is None:
        return
    for check in outcome.checks:
        mark = "[green]passed[/]" if check.passed else "[yellow]failed (warning)[/]"
        out.print(f"check {check.name}: {mark} {check.description}", highlight=False)
    out.print(
        f"run {outcome.run_id} ({outcome.job}): "
        f"{'succeeded' if outcome.success else 'FAILED at ' + ', '.join(outcome.failed_steps)}\n",
        highlight=False,
    )


@lake_app.command("reset")
def lake_reset(
    yes: Annotated[bool, typer.Option("--yes", help="really delete the lake")] = False,
) -> None:
    """Delete the lake (bronze, quarantine, DuckDB, reports) and the landing consumer groups."""
    import shutil

    from kafka.errors import KafkaError

    from sentinel.kafka.clients import admin_client

    settings = _settings()
    if not yes:
        raise _fail(f"this deletes {settings.lake_root} and the landing offsets; add --yes", 2)
    groups = [f"{settings.lake_consumer_group}.{t}" for t in ("events", "alerts", "dlq")]
    try:
        admin = admin_client(settings)
        try:
            existing = {g["group_id"] for g in admin.list_groups()}
            if present := [g for g in groups if g in existing]:
                admin.delete_groups(present)
        finally:
            admin.close()
    except (KafkaError, OSError) as exc:
        raise _fail(f"cannot delete the landing consumer groups: {exc!r}") from None
    shutil.rmtree(settings.lake_root, ignore_errors=True)
    out.print(
        f"deleted {settings.lake_root} and consumer groups {', '.join(groups)}", highlight=False
    )


@lake_app.command("status")
def lake_status() -> None:
    """Row counts of every bronze, silver and gold table."""
    _print_lake(_settings())


def _scenario_records(
    scenario: str,
    count: int,
    seed: int,
    hosts: int,
    start: datetime | None,
    malformed: int,
    events_per_second: float = 200.0,
) -> Any:
    """The scenario's events, with `malformed` bad records spread evenly through them."""
    from agents.scenarios import generate, malformed_records

    kwargs: dict[str, Any] = {"seed": seed, "hosts": hosts, "events_per_second": events_per_second}
    if start is not None:
        kwargs["start"] = start
    events = generate(scenario, count, **kwargs)
    if not malformed:
        return events
    bad = malformed_records(malformed, seed=seed)
    every = max(1, count // (malformed + 1))

    def mixed() -> Any:
        pending = iter(bad)
        for i, event in enumerate(events, start=1):
            yield event
            if i % every == 0:
                record = next(pending, None)
                if record is not None:
                    yield record
        yield from pending

    return mixed()


@app.command()
def demo(
    count: Annotated[int, typer.Option(min=1, help="events of the mixed scenario")] = 50_000,
    seed: Annotated[int, typer.Option(help="scenario seed")] = 7,
    malformed: Annotated[int, typer.Option(min=0, help="malformed records mixed in")] = 10,
    keep_running: Annotated[
        bool, typer.Option(help="leave a broker this command started running afterwards")
    ] = False,
) -> None:
    """The main job end to end: broker, topics, a detection worker, a mixed replay, the lake."""
    from sentinel.demo import DemoError, run

    def produce(n: int, s: int, bad: int) -> None:
        # Event time ends about now: fresh, and none in the future. At 10 events/s of event time
        # the default 50,000 events span 83 minutes, 17 five-minute windows per host to train on.
        start = datetime.now(UTC) - timedelta(seconds=n / DEMO_EVENTS_PER_SECOND)
        replay(
            scenario="mixed",
            count=n,
            rate=None,
            seed=s,
            hosts=20,
            events_per_second=DEMO_EVENTS_PER_SECOND,
            start=start.isoformat(),
            malformed=bad,
            to=None,
            topic=None,
            quiet=False,
        )

    def lake() -> bool:
        from orchestration.lib.runs import run_job

        settings = _settings()
        log = _lake_log(settings, "lake_hourly")
        out.print(f"landing, dbt and gates run now; log: {log}", highlight=False)
        outcome = run_job(settings, "lake_hourly", log_file=log)
        _print_lake(settings, outcome)
        return bool(outcome.success)

    def models() -> bool:
        from orchestration.lib.runs import run_job

        settings = _settings()
        log = _lake_log(settings, "models_daily")
        out.print(f"training, promotion and drift run now; log: {log}", highlight=False)
        outcome = run_job(settings, "models_daily", log_file=log)
        _print_models(settings, outcome)
        return bool(outcome.success)

    def evaluations() -> bool:
        import os

        from evals.cli import run as run_evals

        settings = _settings()
        if not settings.gateway_url:  # the demo's own gateway, not one in this process
            os.environ["SENTINEL_GATEWAY_URL"] = settings.gateway_base_url
            get_settings.cache_clear()
        try:
            run_evals(
                models=None,
                dataset=None,
                out_dir=None,
                thresholds=None,
                cases=None,
                no_mlflow=False,
            )
        except typer.Exit as exc:
            return exc.exit_code == 0
        return True

    _embedded_gateway_key(_settings())
    try:
        run(
            _settings(),
            out,
            count=count,
            seed=seed,
            malformed=malformed,
            keep_running=keep_running,
            replay=produce,
            lake=lake,
            models=models,
            evals=evaluations,
        )
    except DemoError as exc:
        raise _fail(str(exc)) from None


def _embedded_gateway_key(settings: Settings) -> None:
    """Give the stack one client key for the gateway when none is configured: kept under the
    gateway's state folder, put into the environment the gateway and the worker inherit."""
    import os
    import secrets

    if settings.gateway_api_key:
        return
    path = settings.gateway_root / "embedded-client.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"sk-sentinel-{secrets.token_hex(20)}\n")
        path.chmod(0o600)
    os.environ["SENTINEL_GATEWAY_API_KEY"] = path.read_text().strip()
    get_settings.cache_clear()


def _leads_session(child: Any) -> bool:
    import os

    with contextlib.suppress(ProcessLookupError):
        return bool(os.getsid(child.pid) == child.pid)
    return False


@app.command()
def dev(
    worker: Annotated[bool, typer.Option(help="start a detection worker too")] = True,
) -> None:
    """Broker, topics, the LLM gateway, a detection worker and the Dagster UI, until Ctrl-C."""
    import os
    import signal
    import subprocess

    from orchestration.lib.runs import instance_for
    from sentinel.demo import DemoError, start_gateway, start_worker
    from sentinel.kafka import BrokerError, ensure_contract_topics
    from sentinel.settings import PROJECT_ROOT

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (a service manager, `timeout`) stops it like Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    _embedded_gateway_key(_settings())
    settings = _settings()
    broker = _broker()
    try:
        out.print(broker.start().describe(), highlight=False)
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    created, _ = ensure_contract_topics(settings)
    if created:
        out.print(f"created topics: {', '.join(created)}", highlight=False)
    children: list[subprocess.Popen[bytes]] = []
    try:
        if worker and settings.triage_enabled:
            log = settings.gateway_root / "dev-gateway.log"
            try:
                children.append(start_gateway(settings, log))
            except DemoError as exc:
                raise _fail(str(exc)) from None
            out.print(f"LLM gateway at {settings.gateway_base_url}; log: {log}", highlight=False)
        if worker:
            log = settings.streams_dir / "dev-worker.log"
            children.append(start_worker(settings, log))
            out.print(
                f"detection worker on 127.0.0.1:{settings.streams_web_port}; log: {log}",
                highlight=False,
            )
        instance_for(settings).dispose()  # DAGSTER_HOME with its dagster.yaml
        env = dict(os.environ, DAGSTER_HOME=str(settings.dagster_home))
        dagster = Path(sys.executable).with_name("dagster")
        children.append(
            subprocess.Popen(
                [
                    str(dagster),
                    "dev",
                    "-w",
                    "workspace.yaml",
                    "-h",
                    settings.dagster_host,
                    "-p",
                    str(settings.dagster_port),
                ],
                cwd=PROJECT_ROOT,
                env=env,
                start_new_session=True,
            )
        )
        out.print(
            f"Dagster UI: http://{settings.dagster_host}:{settings.dagster_port} "
            f"(DAGSTER_HOME={settings.dagster_home}); Ctrl-C stops everything",
            highlight=False,
        )
        while all(child.poll() is None for child in children):
            time.sleep(1)
        raise _fail("a child process exited; see its log above")
    except KeyboardInterrupt:
        out.print("stopping ...")
    finally:
        for child in reversed(children):
            if child.poll() is None:
                # dagster dev has children of its own: signal its whole session.
                with contextlib.suppress(ProcessLookupError):
                    if _leads_session(child):
                        os.killpg(child.pid, signal.SIGTERM)
                    else:
                        child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=30)
        out.print("the broker keeps running: `sentinel kafka down` stops it")


def main() -> None:
    from sentinel.logs import configure_logging

    # A bad setting is reported by the command itself, with the variable's name.
    with contextlib.suppress(ValidationError):
        configure_logging(get_settings())
    app()


if __name__ == "__main__":
    main()
