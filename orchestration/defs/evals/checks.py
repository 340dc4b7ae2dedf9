"""The evaluation gate as a blocking asset check of `triage_eval_report`.

The gate needs the scores the materialization just computed, so the asset reports the check's
result itself (spec and result are built here); a failure has ERROR severity and blocks.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

GATE_CHECK = "triage_eval_gate_check"


def gate_check_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        GATE_CHECK,
        asset=asset,
        blocking=True,
        description=(
            "every variant meets evals/thresholds.yaml and has not regressed from its last "
            "accepted run; control prompts (triage-terse) must fail"
        ),
    )


def gate_check_result(evaluation: Any) -> dg.AssetCheckResult:
    """The check's result from an `evals.evaluate.Evaluation`."""
    outcome = evaluation.outcome
    return dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.summary(),
        metadata={
            "failures": {name: [str(f) for f in fs] for name, fs in outcome.failures.items()},
            "controls": [n for n, v in outcome.variants.items() if v.control],
            "accepted_as_baseline": evaluation.accepted,
            "thresholds": outcome.thresholds,
        },
    )
