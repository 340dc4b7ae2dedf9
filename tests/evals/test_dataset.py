"""The golden dataset: valid alerts, every core rule covered, pinned by the manifest."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from evals.dataset import (
    DEFAULT_DATASET,
    VERDICTS,
    Dataset,
    DatasetError,
    file_sha256,
    load_dataset,
    manifest,
)
from sentinel.contracts import errors
from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT

CORE = load_pack(PROJECT_ROOT / "rules" / "core")


def test_every_alert_satisfies_the_alert_contract(golden: Dataset) -> None:
    for case in golden.cases:
        assert errors("alert", case.evidence["alert"]) == [], case.id


def test_every_core_rule_has_at_least_two_cases_and_the_alerts_match_their_rule(
    golden: Dataset,
) -> None:
    rules = {r.id: r for r in CORE.rules}
    per_rule = Counter(c.rule_id for c in golden.cases)
    assert set(per_rule) == set(rules)
    assert min(per_rule.values()) >= 2
    assert len(golden.cases) >= 56
    for case in golden.cases:
        alert, rule = case.evidence["alert"], rules[case.rule_id]
        assert alert["rule"]["id"] == case.rule_id
        assert (alert["title"], alert["severity"]) == (rule.title, rule.severity), case.id
        assert alert["mitre"] == list(rule.mitre), case.id


def test_references_are_complete_and_every_verdict_and_tricky_benign_is_represented(
    golden: Dataset,
) -> None:
    verdicts = Counter(c.reference.verdict for c in golden.cases)
    assert set(verdicts) == set(VERDICTS)
    assert min(verdicts.values()) >= 10
    tricky = [c for c in golden.cases if "tricky-benign" in c.tags]
    assert len(tricky) >= 10
    assert all(c.reference.verdict == "benign" for c in tricky)
    for case in golden.cases:
        ref = case.reference
        assert len(ref.summary.split()) >= 20, case.id
        assert ref.recommended_actions, case.id
        host = case.evidence["alert"]["host"]
        # An analyst names the host the alert is about.
        assert host["name"] in ref.summary or host["id"] in ref.summary, case.id
        if ref.verdict == "benign":
            assert ref.mitre == [], case.id  # nothing malicious to map


def test_the_manifest_pins_the_dataset_file_by_version_and_sha256(golden: Dataset) -> None:
    entry = manifest()["triage-golden-v1"]
    assert entry["file"] == DEFAULT_DATASET.name
    assert entry["sha256"] == file_sha256(DEFAULT_DATASET), (
        "triage-golden-v1.jsonl changed: bump its version in evals/datasets/manifest.yaml and "
        "update the sha256"
    )
    assert entry["cases"] == len(golden.cases)
    assert golden.version == entry["version"] == "1.0.0"


def test_an_edited_listed_dataset_is_refused_until_the_manifest_is_bumped(tmp_path: Path) -> None:
    copy = tmp_path / DEFAULT_DATASET.name  # same name: the manifest's entry applies
    copy.write_text(DEFAULT_DATASET.read_text().replace("web-1", "web-01", 1))
    with pytest.raises(DatasetError, match="bump the version"):
        load_dataset(copy)


def test_a_malformed_case_is_reported_with_its_line_and_field(tmp_path: Path) -> None:
    lines = DEFAULT_DATASET.read_text().splitlines()[:2]
    bad = tmp_path / "mine.jsonl"
    bad.write_text(
        lines[0] + "\n" + lines[1].replace('"verdict": "', '"verdict": "maybe-', 1) + "\n"
    )
    with pytest.raises(DatasetError, match=r"mine.jsonl:2: field 'reference.verdict'"):
        load_dataset(bad)
    unlisted = tmp_path / "subset.jsonl"
    unlisted.write_text("\n".join(lines) + "\n")
    assert load_dataset(unlisted).version == "unversioned"
