"""The chaos drill end to end, shortened (60 s of production): every fault is injected into the
real stack and the reconciliation finds nothing lost and nothing duplicated; the reports and the
document block are written. `make chaos` runs the full-length drill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentinel.chaos.drill import ATTACK_EVENTS, SLOW_ATTACKS, DrillPlan
from sentinel.chaos.report import BEGIN, END
from sentinel.cli import app as cli
from sentinel.settings import Settings

pytestmark = pytest.mark.kafka


def test_plan_rejects_faults_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="cut_s"):
        DrillPlan(seconds=60, cut_s=30).check()
    with pytest.raises(ValueError, match="slow_s"):
        DrillPlan(seconds=60, cut_s=10, slow_s=30).check()
    with pytest.raises(ValueError, match="at least 40"):
        DrillPlan(seconds=20).check()
    DrillPlan(seconds=60, cut_s=12, slow_s=8).check()


def test_the_drill_under_every_fault_loses_and_duplicates_nothing(
    tmp_path: Path, kafka: Settings
) -> None:
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text(f"# Reliability\n\nbefore\n\n{BEGIN}\nold tables\n{END}\n\nafter\n")
    out = tmp_path / "drill"
    result = CliRunner().invoke(
        cli,
        [
            "chaos", "run", "--seconds", "60", "--rate", "120", "--cut", "12", "--slow", "8",
            "--malformed", "40", "--out", str(out), "--record", str(doc),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + "\n" + (out / "logs").as_posix()

    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["lost"] == 0 and report["duplicated"] == 0
    faults = [f["fault"] for f in report["faults"]]
    assert [f.split()[0] for f in faults] == ["SIGKILL", "restart", "cut", "slow"]
    assert all(f["recovered_s"] is not None for f in report["faults"])
    checks = {c["name"].split()[0]: c for c in report["checks"]}
    assert checks["agent"]["expected"] == checks["agent"]["observed"] == 2 * 60 * 120
    # the agents' events, the attack episodes replayed during the slow-down, the malformed ones
    attacks = len(SLOW_ATTACKS) * ATTACK_EVENTS
    assert checks["records"]["expected"] == 2 * 60 * 120 + attacks + 2 * 40
    assert (
        checks["alerts"]["expected"] > 10
        and checks["alerts"]["observed"] == checks["alerts"]["expected"]
    )
    assert checks["lake"]["expected"] == checks["records"]["expected"]
    slow = next(f for f in report["faults"] if f["fault"].startswith("slow"))
    assert "backlog peaked at 0 " not in slow["detail"]  # triage had work while it was slow
    cut = next(f for f in report["faults"] if f["fault"].startswith("cut"))
    assert "events waited in its spool" in cut["detail"] and not cut["detail"].startswith("0 ")
    assert any(s.get("detection_lag") is not None for s in report["samples"])

    text = doc.read_text()
    assert "old tables" not in text and "before" in text and "after" in text
    assert "| SIGKILL the detection worker |" in text and "Nothing lost, nothing duplicated" in text
    assert (out / "report.html").read_text().count("<tr>") >= 10
