"""The Enricher: engine tables, batch annotation per event kind, snapshots, reloads, and the
remote service under its batch deadline."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.enrichment import BatchEnrichment, Enricher, EnrichmentConfig, FeedError
from streams.enrichment.enricher import DEFAULT_FEEDS
from tests.streams.enrichment.conftest import ReputationService

XMRIG = "3c2e3084fce0ab83392933e1e498ef3992242b130b20036bf5da5ea45ec1fa17"
UNKNOWN_HASH = "0" * 64
MARGIN_S = 0.5  # see test_remote.py


def event(kind: str, host: str = "h-002", **body: Any) -> dict[str, Any]:
    return {
        "schema": "sentinel.event/1",
        "id": f"e-{kind}-{sorted(body.items())}",
        "ts": "2026-12-03T08:00:00.000000Z",
        "host": {"id": host, "name": "dev-1", "os": "linux"},
        "kind": kind,
        kind: body,
    }


def enrich(enricher: Enricher, events: list[dict[str, Any]]) -> BatchEnrichment:
    async def main() -> BatchEnrichment:
        try:
            return await enricher.enrich_batch(events)
        finally:
            await enricher.aclose()

    return asyncio.run(main())


@pytest.fixture
def feeds(tmp_path: Path) -> Path:
    """Copies of the shipped feeds that a test may edit."""
    for name in ("threat_intel_ip.csv", "file_hashes.csv", "hosts.csv"):
        shutil.copy(DEFAULT_FEEDS / name, tmp_path / name)
    return tmp_path


def config_for(feeds: Path, **kwargs: Any) -> EnrichmentConfig:
    return EnrichmentConfig(
        threat_intel=feeds / "threat_intel_ip.csv",
        file_hashes=feeds / "file_hashes.csv",
        hosts=feeds / "hosts.csv",
        **kwargs,
    )


# --- tables, snapshot, metrics


def test_defaults_give_an_engine_table_per_kind() -> None:
    tables = Enricher.from_defaults().engine_tables()
    assert set(tables) == {"ip", "file_hash", "host"}
    assert tables["ip"]["203.0.113.7"]["reputation"] == "malicious"
    assert tables["file_hash"][XMRIG]["reputation"] == "malicious"
    assert tables["host"]["h-004"]["role"] == "bastion"
    assert all("/" not in key for key in tables["ip"])


def test_snapshot_names_every_feed_and_follows_its_content(feeds: Path) -> None:
    enricher = Enricher(config_for(feeds))
    before = enricher.snapshot
    assert re.fullmatch(r"ti:[0-9a-f]{12}\+fh:[0-9a-f]{12}\+hosts:[0-9a-f]{12}", before)
    assert before == Enricher.from_defaults().snapshot
    assert enricher.reload() is False
    hosts = feeds / "hosts.csv"
    hosts.write_text(
        hosts.read_text().replace("h-019,dev-7,dev,bob,low", "h-019,dev-7,dev,bob,high")
    )
    assert enricher.reload() is True
    after = enricher.snapshot
    assert after.split("+")[:2] == before.split("+")[:2]
    assert after.split("+")[2] != before.split("+")[2]
    assert enricher.engine_tables()["host"]["h-019"]["criticality"] == "high"


def test_a_broken_feed_on_reload_changes_nothing_and_says_where(feeds: Path) -> None:
    enricher = Enricher(config_for(feeds))
    before = enricher.snapshot
    hosts = feeds / "hosts.csv"
    text = hosts.read_text() + "h-100,x,web,ops,urgent,prod\n"
    hosts.write_text(text)
    ti = feeds / "threat_intel_ip.csv"
    ti.write_text(ti.read_text() + "203.0.113.250,malicious,lab,,,,\n")
    with pytest.raises(FeedError) as err:
        enricher.reload()
    line = len(text.splitlines())
    assert f"{hosts}:{line}: criticality: 'urgent' is not one of low, medium" in str(err.value)
    assert enricher.snapshot == before
    record = enricher.ip.lookup("203.0.113.250")  # the good feed was not swapped in either
    assert record is not None and record["indicator"] == "203.0.113.0/24"


def test_metrics_count_lookups_per_feed() -> None:
    enricher = Enricher.from_defaults()
    enrich(enricher, [event("net", dst_ip="203.0.113.7", src_ip="10.0.3.11")])
    metrics = enricher.metrics()
    assert set(metrics) == {"ti", "fh", "hosts"}
    assert (metrics["ti"]["lookups"], metrics["ti"]["hits"], metrics["ti"]["misses"]) == (2, 1, 1)
    assert metrics["hosts"]["hits"] == 1


def test_from_settings_takes_the_enrichment_fields_it_finds(feeds: Path) -> None:
    settings = SimpleNamespace(
        enrichment_threat_intel=feeds / "threat_intel_ip.csv",
        enrichment_remote_url="http://127.0.0.1:9/",
        enrichment_batch_deadline_s=0.5,
        enrichment_remote_kinds=["ip"],
        enrichment_cache_size=None,  # unset in the settings: keep the default
        kafka_bootstrap="127.0.0.1:9092",
    )
    config = EnrichmentConfig.from_settings(settings)
    assert config.threat_intel == feeds / "threat_intel_ip.csv"
    assert config.remote_url == "http://127.0.0.1:9/"
    assert config.batch_deadline_s == 0.5
    assert config.remote_kinds == ("ip",)
    assert config.cache_size == EnrichmentConfig().cache_size
    enricher = Enricher.from_settings(settings)
    assert enricher.remote is not None and enricher.metrics()["remote"]["breaker"] == "closed"


def test_config_rejects_nonsense_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="batch_deadline_s must be positive"):
        EnrichmentConfig(batch_deadline_s=0)
    with pytest.raises(ValueError, match="remote_kinds has \\['dns'\\]"):
        EnrichmentConfig(remote_kinds=("ip", "dns"))


# --- batches, local feeds only


def test_each_kind_gets_the_fields_that_apply_to_it() -> None:
    net = event("net", action="connect", dst_ip="203.0.113.7", src_ip="198.51.100.155")
    auth = event("auth", host="h-004", action="failure", user="root", src_ip="198.51.100.23")
    file = event("file", action="create", path="/tmp/.x", sha256=XMRIG)
    proc = event("proc", action="exec", exe="/usr/bin/curl", cmdline="curl 203.0.113.7")
    dns = event("dns", query="x7k2.update-cdn.example", answers=["203.0.113.7"])
    result = enrich(Enricher.from_defaults(), [net, auth, file, proc, dns])

    assert set(net["enrichment"]) == {"host", "dst_ip", "src_ip"}
    assert net["enrichment"]["dst_ip"]["tags"] == ["dropper", "payload-host"]
    assert net["enrichment"]["src_ip"]["indicator"] == "198.51.100.0/24"
    assert net["enrichment"]["host"]["name"] == "dev-1"
    assert set(auth["enrichment"]) == {"host", "src_ip"}
    assert auth["enrichment"]["src_ip"]["tags"] == ["c2", "reverse-shell"]
    assert auth["enrichment"]["host"]["role"] == "bastion"
    assert set(file["enrichment"]) == {"host", "file"}
    assert file["enrichment"]["file"]["family"] == "xmrig"
    # Addresses inside commands and DNS answers are the rules' business, not enrichment's.
    assert set(proc["enrichment"]) == {"host"}
    assert set(dns["enrichment"]) == {"host"}
    assert result.events_enriched == 5
    assert result.keys_looked_up == 6  # 2 hosts, 3 addresses, 1 hash
    assert (result.remote_keys, result.degraded_keys) == (0, 0)


def test_unknown_keys_leave_the_event_alone() -> None:
    unknown = event("net", host="h-999", dst_ip="10.0.0.2", src_ip="10.0.3.11")
    no_hash = event("file", host="h-999", action="delete", path="/tmp/x")
    unknown_hash = event("file", host="h-999", action="create", path="/tmp/y", sha256=UNKNOWN_HASH)
    odd = event("net", host="h-999", dst_ip="not-an-address", src_ip="")
    odd["host"] = "h-002"  # not an object: nothing to look up
    events = [unknown, no_hash, unknown_hash, odd]
    before = [dict(e) for e in events]
    result = enrich(Enricher.from_defaults(), events)
    assert events == before
    assert not any("enrichment" in e for e in events)
    assert result.events_enriched == 0
    assert result.extra_tables == {}


def test_an_existing_enrichment_object_is_extended_not_replaced() -> None:
    net = event("net", dst_ip="203.0.113.45")
    net["enrichment"] = {"geo": {"country": "NL"}}
    enrich(Enricher.from_defaults(), [net])
    assert set(net["enrichment"]) == {"geo", "host", "dst_ip"}


def test_events_with_the_same_keys_share_one_annotation_and_the_feed_is_untouched() -> None:
    enricher = Enricher.from_defaults()
    first, second = event("net", dst_ip="203.0.113.7"), event("net", dst_ip="203.0.113.7")
    other = event("net", dst_ip="203.0.113.45")
    enrich(enricher, [first, second, other])
    assert first["enrichment"] is second["enrichment"], "built (and encoded) once per batch"
    assert other["enrichment"] is not first["enrichment"]
    assert first["enrichment"]["dst_ip"]["tags"] == ["dropper", "payload-host"]
    assert other["enrichment"]["dst_ip"]["indicator"] != first["enrichment"]["dst_ip"]["indicator"]
    assert enricher.engine_tables()["ip"]["203.0.113.7"]["tags"] == ["dropper", "payload-host"]


def test_extra_tables_carry_range_matches_keyed_as_the_events_spell_them() -> None:
    events = [
        event("auth", action="failure", src_ip="198.51.100.155"),
        event("net", dst_ip="203.0.113.7", src_ip="2001:DB8:BAD:C2::17"),
    ]
    result = enrich(Enricher.from_defaults(), events)
    assert set(result.extra_tables) == {"ip"}
    extra = result.extra_tables["ip"]
    # 203.0.113.7 is already in engine_tables(); the others are not, as written.
    assert set(extra) == {"198.51.100.155", "2001:DB8:BAD:C2::17"}
    assert extra["198.51.100.155"]["indicator"] == "198.51.100.0/24"
    assert extra["2001:DB8:BAD:C2::17"]["indicator"] == "2001:db8:bad:c2::17"


def test_rules_see_the_tables_through_the_real_engine() -> None:
    import sentinel_rhai  # built and installed by `make setup`

    from sentinel.rules.pack import load_pack
    from sentinel.settings import PROJECT_ROOT

    pack = load_pack(PROJECT_ROOT / "rules" / "core")
    engine = sentinel_rhai.RuleEngine()
    engine.replace_all([r.engine_spec(pack) for r in pack.rules if r.id == "core.bad_ip_connect"])
    enricher = Enricher.from_defaults()
    tables = enricher.engine_tables()
    events = [
        event(
            "net",
            action="connect",
            proto="tcp",
            src_ip="10.0.3.11",
            src_port=40000,
            dst_ip=ip,
            dst_port=443,
            pid=4242,
            exe="/usr/bin/curl",
        )
        for ip in ["203.0.113.7", "198.51.100.230", "140.82.112.3"]
    ]
    result = enrich(enricher, events)
    for kind, extra in result.extra_tables.items():
        tables[kind] = {**tables[kind], **extra}
    for kind, table in tables.items():
        engine.set_enrichment(kind, table)
    batch = engine.evaluate(events)
    assert not batch.failures
    fired = sorted(m.alert["context"]["dst_ip"] for m in batch.matches)
    # 198.51.100.230 is malicious only through the 198.51.100.224/27 range: via extra_tables.
    assert fired == ["198.51.100.230", "203.0.113.7"]


# --- batches with a remote service


def test_remote_answers_fill_in_what_the_feeds_do_not_know(
    feeds: Path, service: ReputationService
) -> None:
    service.records[("ip", "45.33.32.156")] = {"reputation": "suspicious", "feed": "remote"}
    service.records[("ip", "198.51.100.155")] = {"reputation": "malicious", "feed": "remote"}
    service.records[("file_hash", UNKNOWN_HASH)] = {"reputation": "malicious", "family": "x"}
    enricher = Enricher(config_for(feeds, remote_url=service.url, batch_deadline_s=2.0))
    events = [
        event("net", dst_ip="45.33.32.156", src_ip="10.0.3.11"),
        event("net", dst_ip="45.33.32.156", src_ip="10.0.3.11"),  # same keys: asked once
        event("net", dst_ip="203.0.113.7", src_ip="198.51.100.155"),
        event("file", action="create", path="/tmp/a", sha256=UNKNOWN_HASH.upper()),
    ]
    result = enrich(enricher, events)

    assert events[0]["enrichment"]["dst_ip"] == {"reputation": "suspicious", "feed": "remote"}
    assert "src_ip" not in events[0]["enrichment"]  # the service does not know it either
    # An exact answer from the service beats a range match from the feed...
    assert events[2]["enrichment"]["src_ip"]["feed"] == "remote"
    # ...and an exact feed entry is never asked about.
    assert events[2]["enrichment"]["dst_ip"]["feed"] == "local-ti"
    assert events[3]["enrichment"]["file"]["family"] == "x"
    assert sorted(service.paths) == sorted(
        ["/ip/45.33.32.156", "/ip/10.0.3.11", "/ip/198.51.100.155", f"/file_hash/{UNKNOWN_HASH}"]
    )
    assert (result.keys_looked_up, result.remote_keys, result.degraded_keys) == (6, 4, 0)
    assert result.extra_tables == {
        "ip": {
            "45.33.32.156": {"reputation": "suspicious", "feed": "remote"},
            "198.51.100.155": {"reputation": "malicious", "feed": "remote"},
        },
        "file_hash": {UNKNOWN_HASH.upper(): {"reputation": "malicious", "family": "x"}},
    }
    remote = enricher.metrics()["remote"]
    assert (remote["lookups"], remote["hits"], remote["misses"], remote["breaker"]) == (
        4,
        3,
        1,
        "closed",
    )


def test_a_later_batch_is_answered_from_the_cache(feeds: Path, service: ReputationService) -> None:
    service.records[("ip", "45.33.32.156")] = {"reputation": "suspicious"}
    enricher = Enricher(config_for(feeds, remote_url=service.url, batch_deadline_s=2.0))

    async def main() -> None:
        for _ in range(3):
            batch = [event("net", dst_ip="45.33.32.156", src_ip="10.9.9.9") for _ in range(5)]
            await enricher.enrich_batch(batch)
            assert all(e["enrichment"]["dst_ip"] == {"reputation": "suspicious"} for e in batch)
        await enricher.aclose()

    asyncio.run(main())
    assert service.calls == 2
    assert enricher.metrics()["remote"]["cache_hits"] == 4


def test_a_hanging_service_cannot_hold_the_batch_past_its_deadline(
    feeds: Path, service: ReputationService
) -> None:
    service.mode = "hang"
    enricher = Enricher(
        config_for(feeds, remote_url=service.url, batch_deadline_s=0.2, remote_timeout_s=5.0)
    )
    events = [event("net", dst_ip=f"45.33.32.{i}", src_ip="203.0.113.7") for i in range(20)]
    started = time.monotonic()
    result = enrich(enricher, events)
    elapsed = time.monotonic() - started
    # Cut at the 0.2 s deadline, not at the 5 s request timeout (a wide margin: a loaded CI box).
    assert elapsed < 0.2 + 4 * MARGIN_S
    assert (result.remote_keys, result.degraded_keys) == (20, 20)
    # Local enrichment is still there; the slow keys are simply missing.
    assert all(set(e["enrichment"]) == {"host", "src_ip"} for e in events)
    assert enricher.metrics()["remote"]["degraded"] == 20


def test_an_open_circuit_skips_the_service_for_later_batches(
    feeds: Path, service: ReputationService
) -> None:
    service.mode = "error"
    enricher = Enricher(
        config_for(
            feeds,
            remote_url=service.url,
            remote_attempts=1,
            breaker_failures=3,
            remote_concurrency=1,
            batch_deadline_s=2.0,
        )
    )

    async def main() -> list[BatchEnrichment]:
        results = []
        for n in range(3):
            batch = [event("net", dst_ip=f"45.33.{n}.{i}") for i in range(4)]
            results.append(await enricher.enrich_batch(batch))
        await enricher.aclose()
        return results

    results = asyncio.run(main())
    assert [r.degraded_keys for r in results] == [4, 4, 4]
    assert service.calls == 3  # the breaker opened on the third failure of the first batch
    remote = enricher.metrics()["remote"]
    assert (remote["breaker"], remote["circuit_open_rejections"]) == ("open", 9)


def test_malformed_keys_are_not_sent_to_the_service(
    feeds: Path, service: ReputationService
) -> None:
    enricher = Enricher(config_for(feeds, remote_url=service.url))
    events = [
        event("net", dst_ip="not-an-address", src_ip="999.1.1.1"),
        event("file", action="create", path="/tmp/a", sha256="abc123"),
    ]
    result = enrich(enricher, events)
    assert (result.keys_looked_up, result.remote_keys, service.calls) == (4, 0, 0)


def test_a_bug_in_the_remote_adapter_degrades_the_key_instead_of_raising(
    feeds: Path, service: ReputationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    enricher = Enricher(config_for(feeds, remote_url=service.url))
    assert enricher.remote is not None

    async def broken(kind: str, key: str, *, budget_s: float | None = None) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(enricher.remote, "lookup", broken)
    net = event("net", dst_ip="45.33.32.156", src_ip="203.0.113.7")
    result = enrich(enricher, [net])
    assert (result.remote_keys, result.degraded_keys) == (1, 1)
    assert set(net["enrichment"]) == {"host", "src_ip"}
    assert enricher.metrics()["remote"]["errors"] == 1
