"""Approve (by someone else) → sign → deploy on the rules topic → workers' RuleSets accept it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from sentinel.kafka import offsets
from sentinel.rules.signing import PackVerifier, load_trusted_keys, sign_pack
from services.policy.packs import folder_files
from streams.detection.ruleset import RuleSet
from tests.services.policy.policytest import RULE, Service, write_pack


def _upload(service: Service, key: str, tmp_path: Path, version: str, rule: str = RULE) -> None:
    with service.client(key) as client:
        if client.get("/packs/tiny").status_code == 404:
            assert client.post("/packs", json={"name": "tiny"}).status_code == 201
        files = folder_files(write_pack(tmp_path / version, version, rule=rule))
        answer = client.post("/packs/tiny/versions", json={"files": files})
        assert answer.status_code == 201, answer.text


def _records(service: Service) -> list[Any]:
    return offsets.read_from(service.settings, service.settings.policy_rules_topic)


def _verifier(service: Service) -> PackVerifier:
    public = service.app.state.policy.key_path.with_suffix(".pub")
    return PackVerifier(load_trusted_keys(public))


def test_an_approved_version_is_signed_deployed_and_accepted_by_a_worker_ruleset(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _upload(service, team["alice"], tmp_path, "1.0.0")
    with service.client(team["alice"]) as author:
        own = author.post("/packs/tiny/versions/1.0.0/approve")
        assert own.status_code == 403 and "needs role approver (or higher)" in own.json()["detail"]
    with service.client(team["dave"]) as deployer:
        early = deployer.post("/packs/tiny/versions/1.0.0/deploy", json={"target": "all"})
        assert early.status_code == 409 and "not approved" in early.json()["detail"]
    with service.client(team["bob"]) as approver:
        approved = approver.post("/packs/tiny/versions/1.0.0/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["approved_by"] == "bob"
        assert approved.json()["signature"]["key_id"] == service.app.state.policy.key_id
    with service.client(team["dave"]) as deployer:
        deployed = deployer.post("/packs/tiny/versions/1.0.0/deploy", json={"target": "all"})
        assert deployed.status_code == 200, deployed.text
        assert deployed.json()["offset"] == 0 and deployed.json()["version"] == "1.0.0"
    [record] = _records(service)
    assert record.key == b"tiny"
    message = orjson.loads(record.value)
    assert (
        message["deployment"]["target"] == "all" and message["deployment"]["approved_by"] == "bob"
    )
    ruleset = RuleSet(verifier=_verifier(service))
    offer = ruleset.offer(record.value)
    assert offer.applied, offer.reason
    assert ruleset.packs["tiny"].version == "1.0.0"

    tampered = copy.deepcopy(message)
    tampered["version"] = "1.0.1"
    tampered["rules"][0]["source"] = RULE.replace("policy-marker", "anything")
    tampered["rules"][0].pop("sha256")
    offer = ruleset.offer(orjson.dumps(tampered))
    assert not offer.applied and offer.reason.startswith("rejected: bad signature")
    greedy = sign_pack(
        {
            **message,
            "version": "1.0.2",
            "rules": [{**message["rules"][0], "capabilities": ["enrich"]}],
        },
        service.app.state.policy.key,
    )
    strict = RuleSet(verifier=PackVerifier(_verifier(service).trusted, frozenset()))
    strict.offer(record.value)
    offer = strict.offer(orjson.dumps(greedy))
    assert not offer.applied
    assert "capability not allowed: rule 'tiny.marker' asks for 'enrich'" in offer.reason
    assert ruleset.packs["tiny"].version == strict.packs["tiny"].version == "1.0.0"


def test_two_person_rule_a_second_author_approval_and_the_deploy_audit(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _upload(service, team["bob"], tmp_path, "1.0.0")  # an approver may upload too
    with service.client(team["bob"]) as bob:
        own = bob.post("/packs/tiny/versions/1.0.0/approve")
        assert own.status_code == 403 and own.json()["detail"].startswith("two-person rule: bob")
    with service.client(team["carol"]) as carol:
        assert carol.post("/packs/tiny/versions/1.0.0/approve").status_code == 200
        again = carol.post("/packs/tiny/versions/1.0.0/approve")
        assert again.status_code == 409 and "approved by carol" in again.json()["detail"]


def test_a_canary_first_then_all_then_a_rollback_republishes_the_old_version(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _upload(service, team["alice"], tmp_path, "1.0.0")
    _upload(service, team["alice"], tmp_path, "1.1.0", RULE + "// 1.1.0: same logic\n")
    with service.client(team["bob"]) as approver:
        for version in ("1.0.0", "1.1.0"):
            assert approver.post(f"/packs/tiny/versions/{version}/approve").status_code == 200
    with service.client(team["dave"]) as deployer:
        for version, target in (("1.0.0", "all"), ("1.1.0", "canary"), ("1.1.0", "all")):
            answer = deployer.post(
                f"/packs/tiny/versions/{version}/deploy", json={"target": target}
            )
            assert answer.status_code == 200, answer.text
        rolled = deployer.post("/packs/tiny/rollback", json={"to": "1.0.0"})
        assert rolled.status_code == 200 and rolled.json()["rollback"] is True
        history = deployer.get("/deployments", params={"pack": "tiny"}).json()
    assert [(d["version"], d["target"], d["rollback"]) for d in history] == [
        ("1.0.0", "all", False),
        ("1.1.0", "canary", False),
        ("1.1.0", "all", False),
        ("1.0.0", "all", True),
    ]
    records = _records(service)
    assert [r.key for r in records] == [b"tiny", b"tiny@canary", b"tiny", b"tiny"]
    canary = RuleSet(verifier=_verifier(service), groups=frozenset({"canary"}))
    rest = RuleSet(verifier=_verifier(service))
    seen: dict[str, list[str]] = {"canary": [], "rest": []}
    for record in records:
        for name, ruleset in (("canary", canary), ("rest", rest)):
            ruleset.offer(record.value)
            seen[name].append(ruleset.packs["tiny"].version)
    assert seen == {
        "canary": ["1.0.0", "1.1.0", "1.1.0", "1.0.0"],
        "rest": ["1.0.0", "1.0.0", "1.1.0", "1.0.0"],
    }


def test_heartbeats_show_which_version_each_instance_runs(
    service: Service, team: dict[str, str]
) -> None:
    with service.client(team["agent-1"]) as agent:
        for instance, kind, version in (
            ("w1", "worker", "1.0.0"),
            ("w2", "worker", "1.1.0"),
            ("agent-h-1", "agent", "1.1.0"),
            ("w1", "worker", "1.1.0"),  # the latest report counts
        ):
            answer = agent.post(
                "/heartbeats", json={"instance": instance, "kind": kind, "packs": {"tiny": version}}
            )
            assert answer.status_code == 202, answer.text
    with service.client(team["vera"]) as viewer:
        status = viewer.get("/heartbeats").json()
    assert status["running"] == {"tiny": {"1.1.0": 3}}
    assert [i["instance"] for i in status["instances"]] == ["agent-h-1", "w1", "w2"]
