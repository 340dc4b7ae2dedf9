"""The core pack against the scenario generator: each attack raises its alerts, baseline stays quiet."""

from __future__ import annotations

import collections

import orjson
import pytest
from sentinel_rhai import RuleEngine

from agents.scenarios import ATTACKS, generate
from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT

PACK = PROJECT_ROOT / "rules" / "core"
THREAT_INTEL = {
    "203.0.113.7": {"reputation": "malicious", "feed": "test", "tags": ["dropper"]},
    "198.51.100.23": {"reputation": "malicious", "feed": "test", "tags": ["c2"]},
}
# The rules each attack scenario must raise (at least one alert each).
EXPECTED = {
    "curl-pipe-shell": {
        "core.curl_pipe_shell",
        "core.exec_from_tmp",
        "core.bad_ip_connect",
        "core.dns_bad_domain",
    },
    "reverse-shell": {"core.reverse_shell", "core.webserver_spawns_shell", "core.bad_ip_connect"},
    "dns-tunnel": {"core.dns_high_entropy_label", "core.dns_txt_burst", "core.dns_bad_domain"},
    "ssh-bruteforce": {"core.ssh_bruteforce", "core.ssh_bruteforce_success"},
    "ransomware-writes": {"core.ransomware_mass_rename", "core.ransom_note", "core.exec_from_tmp"},
    "crypto-miner": {
        "core.crypto_miner_exec",
        "core.mining_pool_connect",
        "core.exec_from_tmp",
        "core.dns_bad_domain",
    },
    "cred-access": {"core.shadow_access", "core.sudo_unusual_user"},
    "persistence-cron": {"core.cron_persistence", "core.curl_pipe_shell", "core.sudo_unusual_user"},
}


def _evaluate(events: list[dict[str, object]]) -> collections.Counter[tuple[str, str, bool]]:
    """(rule id, severity, event is an attack) -> alerts, through the JSON Lines hot path."""
    pack = load_pack(PACK)
    engine = RuleEngine()
    engine.replace_all(pack.engine_specs())
    for name, values in pack.lists.items():
        engine.set_list(name, values)
    engine.set_enrichment("ip", THREAT_INTEL)
    counts: collections.Counter[tuple[str, str, bool]] = collections.Counter()
    for start in range(0, len(events), 2000):
        chunk = events[start : start + 2000]
        result = engine.evaluate_jsonl(b"\n".join(orjson.dumps(e) for e in chunk))
        assert result.failures == [] and result.parse_errors == []
        for match in result.matches:
            labels = chunk[match.event_index]["labels"]
            counts[(match.rule_id, match.alert["severity"], bool(labels["attack"]))] += 1
    return counts


def test_baseline_raises_no_high_or_critical_alert() -> None:
    counts = _evaluate(list(generate("baseline", 60_000, seed=13)))
    loud = {k: v for k, v in counts.items() if k[1] in ("high", "critical")}
    assert loud == {}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_scenario_raises_its_alerts(attack: str) -> None:
    counts = _evaluate(list(generate(attack, 30_000, seed=17)))
    fired = {rule for (rule, _sev, is_attack), n in counts.items() if is_attack and n}
    assert EXPECTED[attack] <= fired, f"missing: {sorted(EXPECTED[attack] - fired)}"
    false_loud = {k: v for k, v in counts.items() if not k[2] and k[1] in ("high", "critical")}
    assert false_loud == {}, "benign events of the same run raised loud alerts"


def test_every_rule_is_exercised_by_the_scenarios_or_its_golden_tests() -> None:
    pack = load_pack(PACK)
    covered = set().union(*EXPECTED.values())
    tested = {p.stem for p in (PACK / "tests").glob("*.yaml")}
    for rule in pack.rules:
        assert rule.id in covered or rule.id.split(".", 1)[1] in tested, rule.id
