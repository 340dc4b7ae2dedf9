"""`sentinel rules test|lint`: the core pack passes; a broken pack fails with a readable reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.rules import PackError, load_pack
from sentinel.rules.testkit import expand_events
from sentinel.settings import PROJECT_ROOT

CORE = PROJECT_ROOT / "rules" / "core"


def sentinel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "sentinel"), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def pack_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CORE, tmp_path / "core"))


def test_core_pack_golden_tests_pass() -> None:
    result = sentinel("rules", "test", str(CORE), "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    pack = load_pack(CORE)
    assert len(pack.rules) >= 15
    assert f"pack core {pack.version}: {len(pack.rules)} rules," in result.stdout
    assert " 0 failed, 0 errors" in result.stdout
    assert result.stdout.count("PASS ") >= 2 * len(pack.rules)


def test_core_pack_lints_clean() -> None:
    result = sentinel("rules", "lint", str(CORE))
    assert result.returncode == 0, result.stdout
    assert f"{CORE}: ok" in result.stdout


def test_a_broken_rule_fails_its_golden_test_with_a_diff(pack_copy: Path) -> None:
    rule = pack_copy / "sudo_unusual_user.rhai"
    rule.write_text(rule.read_text().replace('"sudo_users"', '"shells"'))  # now every sudo fires
    result = sentinel("rules", "test", str(pack_copy))
    assert result.returncode == 1
    assert "FAIL core.sudo_unusual_user: sudo by the admins is a near miss" in result.stdout
    assert "expected 0 alert(s), the rule emitted 2" in result.stdout
    assert "--- expected" in result.stdout and "+++ actual" in result.stdout
    assert "+    user: ops" in result.stdout
    assert " 1 failed" in result.stdout


def test_a_syntax_error_is_reported_with_rule_line_and_column(pack_copy: Path) -> None:
    (pack_copy / "ransom_note.rhai").write_text(
        'let x = 1;\nif event.file.action == "create" {\n  emit(#{ title: });\n}\n'
    )
    lint = sentinel("rules", "lint", str(pack_copy))
    assert lint.returncode == 1
    line = next(x for x in lint.stdout.splitlines() if "ransom_note.rhai" in x)
    assert "core.ransom_note" in line and "line 3" in line
    test = sentinel("rules", "test", str(pack_copy))
    assert test.returncode == 1 and "core.ransom_note" in test.stdout


def test_manifest_problems_name_the_rule_and_field(pack_copy: Path) -> None:
    manifest = pack_copy / "pack.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            "severity: critical\n    kinds: [proc]\n    mitre: [T1059.004]",
            "severity: urgent\n    kinds: [proc]\n    mitre: [T1059.004]",
            1,
        )
    )
    with pytest.raises(PackError, match=r"rule 'core.reverse_shell' field 'severity'"):
        load_pack(pack_copy)
    manifest.write_text(text)
    (pack_copy / "stray.rhai").write_text("emit(#{});")
    with pytest.raises(PackError, match=r"not named by any rule: stray\.rhai"):
        load_pack(pack_copy)
    (pack_copy / "stray.rhai").unlink()
    (pack_copy / "port_scan.rhai").unlink()
    with pytest.raises(
        PackError, match=r"rule 'core.port_scan': file port_scan.rhai does not exist"
    ):
        load_pack(pack_copy)


def test_a_rule_without_a_near_miss_case_fails_lint(pack_copy: Path) -> None:
    tests = pack_copy / "tests" / "ransom_note.yaml"
    text = tests.read_text()
    tests.write_text(text[: text.index("  - name: an ordinary README")])
    lint = sentinel("rules", "lint", str(pack_copy))
    assert lint.returncode == 1
    assert "rule 'core.ransom_note' has no near-miss case" in lint.stdout


def test_events_expand_with_defaults_times_and_templates() -> None:
    events = expand_events(
        [
            {
                "kind": "net",
                "net": {"dst_port": "{i+20}", "exe": "/bin/x{i}"},
                "repeat": 3,
                "every": 2,
            },
            {"kind": "net", "t": 100},
        ],
        {"net": {"action": "connect", "proto": "tcp", "dst_ip": "10.0.0.1"}},
        "case",
    )
    assert [e["net"]["dst_port"] for e in events[:3]] == [20, 21, 22]
    assert [e["net"]["exe"] for e in events[:3]] == ["/bin/x0", "/bin/x1", "/bin/x2"]
    assert [e["ts"][11:19] for e in events] == ["00:00:00", "00:00:02", "00:00:04", "00:01:40"]
    assert len({e["id"] for e in events}) == 4 and events[0]["host"]["id"] == "h-test"
