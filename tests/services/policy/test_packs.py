"""Uploads over HTTP: every version is compiled and golden-tested; failures say where."""

from __future__ import annotations

from pathlib import Path

from sentinel.settings import PROJECT_ROOT
from services.policy.client import upload_folder
from services.policy.packs import folder_files
from tests.services.policy.policytest import RULE, TEST, Service, write_pack


def _create(service: Service, key: str, name: str = "tiny") -> None:
    with service.client(key) as client:
        assert client.post("/packs", json={"name": name}).status_code == 201


def test_a_rule_that_does_not_compile_is_a_422_with_rule_line_and_column(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _create(service, team["alice"])
    broken = write_pack(
        tmp_path, rule='let x = 1;\nif event.proc.cmdline == "a" {\n  emit(#{ ;\n}\n'
    )
    with service.client(team["alice"]) as client:
        answer = client.post("/packs/tiny/versions", json={"files": folder_files(broken)})
        assert answer.status_code == 422
        body = answer.json()
        assert body["detail"] == "rules do not compile"
        [problem] = body["problems"]
        assert problem["kind"] == "compile" and problem["rule"] == "tiny.marker"
        assert problem["file"] == "marker.rhai"
        assert problem["line"] == 3 and isinstance(problem["column"], int)
        assert client.get("/packs/tiny/versions").json() == []


def test_a_failing_golden_test_is_a_422_naming_the_test_and_its_diff(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _create(service, team["alice"])
    noisy = write_pack(tmp_path, rule=RULE.replace('== "policy-marker"', '!= ""'))
    with service.client(team["alice"]) as client:
        answer = client.post("/packs/tiny/versions", json={"files": folder_files(noisy)})
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == "golden tests failed"
    [problem] = body["problems"]
    assert problem["rule"] == "tiny.marker" and problem["file"] == "tests/marker.yaml"
    assert problem["test"] == "anything else is a near miss"
    assert "expected 0 alert(s), the rule emitted 1" in problem["message"]
    assert "+++ actual" in problem["diff"]


def test_a_rule_without_golden_tests_and_a_bad_manifest_are_refused(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _create(service, team["alice"])
    untested = write_pack(tmp_path, test=TEST.replace("rule: tiny.marker", "rule: tiny.other"))
    with service.client(team["alice"]) as client:
        answer = client.post("/packs/tiny/versions", json={"files": folder_files(untested)})
        assert answer.status_code == 422
        messages = [p["message"] for p in answer.json()["problems"]]
        assert any("rule 'tiny.other' is not in pack 'tiny'" in m for m in messages)
        assert any("the rule has no golden test" in m for m in messages)
        files = folder_files(write_pack(tmp_path, "2.0.0"))
        files["pack.yaml"] = files["pack.yaml"].replace("severity: low", "severity: huge")
        answer = client.post("/packs/tiny/versions", json={"files": files})
        assert answer.status_code == 422
        assert "rule 'tiny.marker' field 'severity'" in answer.json()["problems"][0]["message"]
        escape = client.post("/packs/tiny/versions", json={"files": {"../x.rhai": "1"}})
        assert (
            escape.status_code == 422 and escape.json()["detail"] == "bad file name in the upload"
        )


def test_versions_are_immutable_listed_and_diffed_per_rule(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    _create(service, team["alice"])
    with service.client(team["alice"]) as client:
        first = client.post(
            "/packs/tiny/versions", json={"files": folder_files(write_pack(tmp_path, "1.0.0"))}
        )
        assert first.status_code == 201, first.text
        assert first.json()["tests_passed"] == 2 and first.json()["status"] == "awaiting approval"
        again = client.post(
            "/packs/tiny/versions", json={"files": folder_files(write_pack(tmp_path / "b"))}
        )
        assert again.status_code == 409 and "immutable" in again.json()["detail"]
        changed = RULE.replace("emit(#{", 'emit(#{ severity: "low",')
        second = client.post(
            "/packs/tiny/versions",
            json={"files": folder_files(write_pack(tmp_path, "1.1.0", rule=changed))},
        )
        assert second.status_code == 201, second.text
        assert [v["version"] for v in client.get("/packs/tiny/versions").json()] == [
            "1.0.0",
            "1.1.0",
        ]
        diff = client.get("/packs/tiny/diff", params={"from": "1.0.0", "to": "1.1.0"}).json()
        [rule] = diff["rules"]
        assert rule["id"] == "tiny.marker" and rule["change"] == "changed"
        assert '+    emit(#{ severity: "low", context' in rule["diff"]
        assert "--- 1.0.0/marker.rhai" in rule["diff"]
        got = client.get("/packs/tiny/versions/1.1.0").json()
        assert got["message"]["rules"][0]["source"] == changed
        assert client.post("/packs/tiny/versions/1.0.0/deprecate").status_code == 403
    with service.client(team["dave"]) as deployer:
        deprecated = deployer.post("/packs/tiny/versions/1.0.0/deprecate").json()
        assert deprecated["status"] == "deprecated"


def test_the_core_pack_uploads_from_its_folder_and_diffs_added_and_removed_rules(
    service: Service, team: dict[str, str], tmp_path: Path
) -> None:
    answer = upload_folder(service.url, team["alice"], PROJECT_ROOT / "rules" / "core")
    assert answer.status_code == 201, answer.text
    assert answer.json()["rules"] == 20 and answer.json()["tests_passed"] >= 40
    files = folder_files(PROJECT_ROOT / "rules" / "core")
    manifest = files["pack.yaml"].replace("version: 1.0.0", "version: 1.1.0")
    cut = manifest.index("  - id: core.shadow_access")
    end = manifest.index("  - id:", cut + 5)
    files["pack.yaml"] = manifest[:cut] + manifest[end:]
    del files["shadow_access.rhai"], files["tests/shadow_access.yaml"]
    with service.client(team["alice"]) as client:
        assert client.post("/packs/core/versions", json={"files": files}).status_code == 201
        diff = client.get("/packs/core/diff", params={"from": "1.0.0", "to": "1.1.0"}).json()
        assert [(r["id"], r["change"]) for r in diff["rules"]] == [
            ("core.shadow_access", "removed")
        ]
        back = client.get("/packs/core/diff", params={"from": "1.1.0", "to": "1.0.0"}).json()
        assert back["rules"][0]["change"] == "added"
        assert "+if event.proc.action" in back["rules"][0]["diff"]
