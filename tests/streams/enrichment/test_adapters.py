"""Local feeds: exact, range and longest-prefix lookups, format errors, snapshots, URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.enrichment import FeedError, FileHashReputation, HostInventory, IpReputation
from streams.enrichment.enricher import DEFAULT_FEEDS
from tests.streams.enrichment.conftest import TI_HEADER, ReputationService

WriteFeed = Callable[[str, str], Path]
XMRIG = "3c2e3084fce0ab83392933e1e498ef3992242b130b20036bf5da5ea45ec1fa17"
KINSING = "54c3ef4c8fee4e238d6e1f45a5e39212cc2666fd3c5e4cbf13226a746efe527b"


@pytest.fixture(scope="module")
def shipped_ti() -> IpReputation:
    return IpReputation(DEFAULT_FEEDS / "threat_intel_ip.csv")


def ti_text(*rows: str) -> str:
    return "\n".join([TI_HEADER, *rows]) + "\n"


def indicator(ti: IpReputation, ip: str) -> str | None:
    record = ti.lookup(ip)
    return None if record is None else str(record["indicator"])


# --- lookups


def test_shipped_malicious_addresses_have_their_own_records(shipped_ti: IpReputation) -> None:
    for ip, tag in [
        ("203.0.113.7", "dropper"),
        ("203.0.113.45", "mining-pool"),
        ("198.51.100.23", "c2"),
    ]:
        record = shipped_ti.lookup(ip)
        assert record is not None
        assert record["indicator"] == ip
        assert record["reputation"] == "malicious"
        assert tag in record["tags"]


def test_address_inside_a_listed_range_gets_the_range_record(shipped_ti: IpReputation) -> None:
    record = shipped_ti.lookup("198.51.100.155")
    assert record is not None
    assert (record["indicator"], record["reputation"]) == ("198.51.100.0/24", "suspicious")
    github = shipped_ti.lookup("140.82.112.3")
    assert github is not None
    assert (github["reputation"], github["asn"], github["feed"]) == ("benign", 36459, "allowlist")
    assert "github" in github["tags"]


def test_longest_prefix_wins_and_an_exact_address_beats_every_range(
    write_feed: WriteFeed,
) -> None:
    ti = IpReputation(
        write_feed(
            "ti.csv",
            ti_text(
                "10.0.0.0/8,benign,corp,internal,,,",
                "10.1.2.0/24,malicious,lab,c2,,,",
                "10.1.0.0/16,suspicious,lab,,,,",
                "10.1.2.3,benign,corp,jump-host,,,",
            ),
        )
    )
    assert indicator(ti, "10.1.2.3") == "10.1.2.3"
    assert indicator(ti, "10.1.2.200") == "10.1.2.0/24"
    assert indicator(ti, "10.1.9.9") == "10.1.0.0/16"
    assert indicator(ti, "10.200.0.1") == "10.0.0.0/8"
    assert indicator(ti, "11.0.0.1") is None


def test_ipv6_ranges_and_addresses_match_however_the_address_is_written(
    write_feed: WriteFeed,
) -> None:
    ti = IpReputation(
        write_feed(
            "ti.csv",
            ti_text(
                "2001:db8::/32,suspicious,lab,,,,",
                "2001:DB8:dead::/48,malicious,lab,c2,,,",
                "2001:db8:0:0::1,benign,lab,,,,",
                "203.0.113.7,malicious,lab,dropper,,,",
            ),
        )
    )
    assert indicator(ti, "2001:db8::1") == "2001:db8::1"
    assert indicator(ti, "2001:0DB8:0000:0000:0000:0000:0000:0001") == "2001:db8::1"
    assert indicator(ti, "2001:db8:dead:beef::5") == "2001:db8:dead::/48"
    assert indicator(ti, "2001:db8:1::5") == "2001:db8::/32"
    assert indicator(ti, "2001:db9::1") is None
    # Dual-stack sockets report IPv4 peers as IPv4-mapped IPv6 addresses.
    assert indicator(ti, "::ffff:203.0.113.7") == "203.0.113.7"
    # IPv4 ranges never match IPv6 addresses with the same integer value, and the reverse.
    assert indicator(ti, "::cb00:7107") is None


def test_a_key_that_is_not_an_address_is_a_miss_not_an_error(shipped_ti: IpReputation) -> None:
    for key in ["", "not-an-ip", "203.0.113.700", "203.0.113.0/24", "::ffff:zz"]:
        assert shipped_ti.lookup(key) is None


def test_table_holds_exact_entries_only_keyed_canonically(shipped_ti: IpReputation) -> None:
    table = shipped_ti.table()
    assert "203.0.113.7" in table and "198.51.100.23" in table
    assert "2001:db8:bad:c2::17" in table
    assert not [key for key in table if "/" in key]
    assert len(table) < len(shipped_ti)  # the ranges are only reachable through lookup()


def test_local_lookups_are_counted(write_feed: WriteFeed) -> None:
    ti = IpReputation(write_feed("ti.csv", ti_text("10.0.0.0/8,benign,,,,,")))
    for ip in ["10.1.1.1", "10.2.2.2", "8.8.8.8"]:
        ti.lookup(ip)
    assert (ti.metrics.lookups, ti.metrics.hits, ti.metrics.misses) == (3, 2, 1)


def test_shipped_file_hashes_mark_the_known_samples_malicious() -> None:
    hashes = FileHashReputation(DEFAULT_FEEDS / "file_hashes.csv")
    for sha in (XMRIG, KINSING):
        record = hashes.lookup(sha)
        assert record is not None and record["reputation"] == "malicious"
    assert hashes.lookup(XMRIG.upper()) == hashes.lookup(XMRIG)
    assert hashes.lookup("0" * 64) is None
    assert set(hashes.table()) >= {XMRIG, KINSING}


def test_shipped_inventory_covers_the_simulated_fleet() -> None:
    hosts = HostInventory(DEFAULT_FEEDS / "hosts.csv")
    ids = [f"h-{i:03d}" for i in range(20)]
    records = [hosts.lookup(host_id) for host_id in ids]
    assert all(records)
    assert {r["role"] for r in records if r} == {"web", "db", "build", "dev", "bastion"}
    assert hosts.lookup("h-000") == {
        "host_id": "h-000",
        "name": "web-1",
        "role": "web",
        "owner": "team-web",
        "criticality": "high",
        "environment": "prod",
    }
    assert hosts.lookup("h-020") is None


# --- format errors


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("203.0.113.9,evil,lab,,,,", "reputation: 'evil' is not one of malicious, suspicious"),
        ("203.0.113.9/24,malicious,lab,,,,", "has host bits set"),
        ("203.0.113.300,malicious,lab,,,,", "does not appear to be an IPv4 or IPv6 address"),
        ("203.0.113.9,malicious,lab", "expected 7 fields (indicator,reputation,"),
        (",malicious,lab,,,,", "'indicator' is missing or empty"),
        ("203.0.113.9,malicious,lab,,Netherlands,,", "country: 'Netherlands' is not a two-letter"),
        ("203.0.113.9,malicious,lab,,,ASX,", "asn: 'ASX' is not an AS number"),
        ("203.0.113.9,malicious,lab,,,,03/12/2026", "first_seen: '03/12/2026' is not a date"),
    ],
)
def test_a_bad_row_is_reported_with_file_line_and_reason(
    write_feed: WriteFeed, row: str, reason: str
) -> None:
    path = write_feed("ti.csv", ti_text("# a comment line", "203.0.113.7,malicious,lab,,,,", row))
    with pytest.raises(FeedError) as err:
        IpReputation(path)
    assert f"{path}:4: " in str(err.value)
    assert reason in str(err.value)


def test_a_duplicate_key_names_both_lines(write_feed: WriteFeed) -> None:
    path = write_feed(
        "ti.csv",
        ti_text(
            "203.0.113.7,malicious,a,,,,", "10.0.0.0/8,benign,,,,,", "203.0.113.7/32,benign,b,,,,"
        ),
    )
    with pytest.raises(
        FeedError,
        match=r"ti\.csv:4: duplicate indicator '203\.0\.113\.7' "
        r"\(first on line 2\)",
    ):
        IpReputation(path)


def test_every_bad_row_is_listed_not_just_the_first(write_feed: WriteFeed) -> None:
    path = write_feed(
        "hashes.csv",
        "sha256,reputation,family,source\n"
        f"{XMRIG},malicious,xmrig,lab\n"
        "abc123,malicious,x,lab\n"
        f"{KINSING},nasty,kinsing,lab\n",
    )
    with pytest.raises(FeedError) as err:
        FileHashReputation(path)
    assert len(err.value.problems) == 2
    assert err.value.problems[0].startswith(f"{path}:3: sha256: 'abc123' is not a SHA-256")
    assert err.value.problems[1].startswith(f"{path}:4: reputation: 'nasty' is not one of")


def test_a_missing_header_column_says_what_header_is_expected(write_feed: WriteFeed) -> None:
    path = write_feed("hosts.csv", "host_id,name,role,owner\nh-000,web-1,web,team-web\n")
    with pytest.raises(FeedError) as err:
        HostInventory(path)
    message = str(err.value)
    assert f"{path}:1: the header lacks column(s) criticality, environment" in message
    assert "host_id,name,role,owner,criticality,environment" in message


def test_an_empty_or_missing_feed_is_reported(write_feed: WriteFeed, tmp_path: Path) -> None:
    empty = write_feed("empty.csv", "# nothing yet\n\n")
    with pytest.raises(FeedError, match="the feed is empty; expected a header 'indicator,"):
        IpReputation(empty)
    with pytest.raises(FeedError, match="no such feed file"):
        IpReputation(tmp_path / "missing.csv")


def test_a_bad_jsonl_line_is_reported_with_its_line(write_feed: WriteFeed) -> None:
    path = write_feed(
        "ti.jsonl",
        '{"indicator": "203.0.113.7", "reputation": "malicious"}\n\n[1, 2]\n{"indicator": \n',
    )
    with pytest.raises(FeedError) as err:
        IpReputation(path)
    assert err.value.problems[0] == f"{path}:3: expected a JSON object"
    assert err.value.problems[1].startswith(f"{path}:4: not valid JSON")


# --- snapshots and reloads


def test_snapshot_follows_content_not_comments_or_row_order(write_feed: WriteFeed) -> None:
    rows = ["203.0.113.7,malicious,lab,dropper,,,", "10.0.0.0/8,benign,corp,,,,"]
    first = IpReputation(write_feed("a.csv", ti_text(*rows))).snapshot
    reordered = IpReputation(write_feed("b.csv", ti_text("# reordered", *reversed(rows))))
    changed = IpReputation(write_feed("c.csv", ti_text(rows[0].replace("dropper", "c2"), rows[1])))
    assert reordered.snapshot == first
    assert changed.snapshot != first
    assert len(first) == 12 and int(first, 16) >= 0


def test_reload_reports_a_change_and_keeps_old_content_when_the_new_is_bad(
    write_feed: WriteFeed,
) -> None:
    path = write_feed("ti.csv", ti_text("203.0.113.7,malicious,lab,,,,"))
    ti = IpReputation(path)
    before = ti.snapshot
    assert ti.reload() is False
    path.write_text(ti_text("203.0.113.7,malicious,lab,,,,", "203.0.113.8,malicious,lab,,,,"))
    assert ti.reload() is True
    assert ti.snapshot != before and ti.lookup("203.0.113.8") is not None
    good = ti.snapshot
    path.write_text(ti_text("203.0.113.7,malicious,lab,,,,", "oops"))
    with pytest.raises(FeedError, match=r"ti\.csv:3: expected 7 fields"):
        ti.reload()
    assert ti.snapshot == good and ti.lookup("203.0.113.8") is not None


def test_jsonl_feed_with_native_values_equals_the_csv(write_feed: WriteFeed) -> None:
    csv_feed = IpReputation(
        write_feed("ti.csv", ti_text("203.0.113.7,malicious,lab,c2|dropper,NL,AS64501,2026-11-02"))
    )
    row = {
        "indicator": "203.0.113.7",
        "reputation": "malicious",
        "feed": "lab",
        "tags": ["c2", "dropper"],
        "country": "nl",
        "asn": 64501,
        "first_seen": "2026-11-02",
    }
    jsonl_feed = IpReputation(write_feed("ti.jsonl", orjson.dumps(row).decode() + "\n"))
    assert jsonl_feed.table() == csv_feed.table()
    assert jsonl_feed.snapshot == csv_feed.snapshot


def test_extra_columns_of_a_richer_feed_are_kept(write_feed: WriteFeed) -> None:
    ti = IpReputation(
        write_feed("ti.csv", TI_HEADER + ",confidence\n203.0.113.7,malicious,,,,,,90\n")
    )
    assert ti.lookup("203.0.113.7") == {
        "indicator": "203.0.113.7",
        "reputation": "malicious",
        "confidence": "90",
    }


# --- feeds from a URL


def test_feed_loads_from_an_http_url(service: ReputationService) -> None:
    service.files["ti.csv"] = (
        ti_text("203.0.113.7,malicious,remote-ti,c2,,,").encode(),
        "text/csv",
    )
    ti = IpReputation(f"{service.url}/feeds/ti.csv")
    assert ti.lookup("203.0.113.7") == {
        "indicator": "203.0.113.7",
        "reputation": "malicious",
        "feed": "remote-ti",
        "tags": ["c2"],
    }


def test_feed_url_without_a_suffix_is_read_as_jsonl_by_its_content_type(
    service: ReputationService,
) -> None:
    body = b'{"host_id": "h-100", "name": "web-9", "criticality": "high"}\n'
    service.files["inventory"] = (body, "application/x-ndjson")
    hosts = HostInventory(f"{service.url}/feeds/inventory")
    assert hosts.lookup("h-100") == {"host_id": "h-100", "name": "web-9", "criticality": "high"}


def test_feed_url_that_fails_names_the_url(service: ReputationService) -> None:
    url = f"{service.url}/feeds/missing.csv"
    with pytest.raises(FeedError, match=rf"{url}: could not fetch the feed: .*404"):
        IpReputation(url)
