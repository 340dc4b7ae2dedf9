"""The contracts: every example validates (or fails) as its name says, and files validate by line."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from sentinel.contracts import CONTRACTS_DIR, KINDS, ContractError, errors, validate, validate_jsonl

VALID = sorted((CONTRACTS_DIR / "examples" / "valid").glob("*.json"))
INVALID = sorted((CONTRACTS_DIR / "examples" / "invalid").glob("*.json"))


def _kind(path: Path) -> str:
    return next(k for k in sorted(KINDS, key=len, reverse=True) if path.name.startswith(k))


def test_every_contract_has_a_schema_and_examples_both_ways() -> None:
    for kind in KINDS:
        assert (CONTRACTS_DIR / f"{kind}.schema.json").exists()
        assert any(_kind(p) == kind for p in VALID), f"no valid example for {kind}"
        assert any(_kind(p) == kind for p in INVALID), f"no invalid example for {kind}"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_validates(path: Path) -> None:
    obj = json.loads(path.read_text())
    validate(_kind(path), obj)
    assert errors(_kind(path), obj) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_fails_naming_the_field_in_its_file_name(path: Path) -> None:
    kind, field, _why = path.stem.split("__")
    with pytest.raises(ContractError) as caught:
        validate(kind, json.loads(path.read_text()))
    assert caught.value.kind == kind
    assert caught.value.path == field
    assert f"field '{field}'" in str(caught.value)


def test_unknown_extra_fields_are_kept_not_rejected() -> None:
    event = json.loads((CONTRACTS_DIR / "examples/valid/event-proc-exec.json").read_text())
    event["k8s"] = {"pod": "web-7d4"}
    event["proc"]["capabilities"] = ["CAP_NET_RAW"]
    validate("event", event)


def test_missing_field_error_names_the_missing_field_not_its_parent() -> None:
    event = json.loads((CONTRACTS_DIR / "examples/valid/event-proc-exec.json").read_text())
    del event["proc"]["exe"]
    with pytest.raises(ContractError, match=r"field 'proc.exe': required field is missing"):
        validate("event", event)


def test_kind_without_its_object_is_rejected() -> None:
    event = json.loads((CONTRACTS_DIR / "examples/valid/event-dns-txt.json").read_text())
    event["kind"] = "auth"
    with pytest.raises(ContractError) as caught:
        validate("event", event)
    assert caught.value.path == "auth"


def test_unknown_contract_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown contract 'evnt'"):
        validate("evnt", {})


def test_validate_jsonl_reports_every_bad_line_with_number_and_field(tmp_path: Path) -> None:
    good = json.loads((CONTRACTS_DIR / "examples/valid/event-proc-exec.json").read_text())
    no_host = dict(good, host={})
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps(no_host),
        b"",
        orjson.dumps({"hello": "world"}),
        orjson.dumps(good),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = validate_jsonl(path)
    assert (report.lines, report.valid, report.bad) == (5, 2, 3)
    assert [(e.line, e.path) for e in report.errors] == [(2, ""), (3, "host.id"), (5, "schema")]
    assert "not JSON" in report.errors[0].reason
    forced = validate_jsonl(path, kind="event")
    assert forced.errors[2].line == 5 and forced.errors[2].path in {"schema", "id", "ts"}
