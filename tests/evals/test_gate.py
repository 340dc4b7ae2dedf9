"""The gate on hand-made results: minimums, regressions from the accepted run, controls."""

from __future__ import annotations

from pathlib import Path

from evals.gate import (
    MetricThreshold,
    Thresholds,
    accept,
    gate,
    load_baselines,
    load_thresholds,
)
from evals.metrics import BASE_METRICS, VERDICT_EXACT_MATCH
from evals.runner import CaseResult, EvalResult, VariantResult

THRESHOLDS = Thresholds(
    metrics={VERDICT_EXACT_MATCH: MetricThreshold(min=0.5, max_regression=0.05)},
    max_rates={"parse_failure_rate": 0.1},
    controls=("triage-terse",),
)


def _variant(prompt: str, exact: float, parse_failures: int = 0) -> VariantResult:
    return VariantResult(
        variant=f"m:{prompt}",
        model="m",
        prompt={"id": prompt, "version": "1", "sha256": "0" * 64},
        metrics={VERDICT_EXACT_MATCH: exact},
        per_rule={},
        confusion={},
        cases=[
            CaseResult(f"c{i}", "core.port_scan", "benign", "ref", "benign", "s", {}, {})
            for i in range(10)
        ],
        parse_failures=parse_failures,
    )


def _result(*variants: VariantResult, sha: str = "a" * 64, run: str = "r1") -> EvalResult:
    return EvalResult(
        run_id=run,
        started_at="",
        finished_at="",
        dataset={"name": "d", "version": "1", "sha256": sha, "path": "", "cases": 10},
        gateway={"base_url": "", "embedded": True},
        judge_model=None,
        metrics=[VERDICT_EXACT_MATCH],
        skipped_metrics=[],
        variants=list(variants),
    )


def test_a_score_below_its_minimum_fails_with_value_and_threshold() -> None:
    outcome = gate(_result(_variant("triage-v1", 0.4)), {}, THRESHOLDS)
    assert not outcome.passed
    (failure,) = outcome.failures["m:triage-v1"]
    assert (failure.metric, failure.kind, failure.value, failure.threshold) == (
        VERDICT_EXACT_MATCH,
        "min",
        0.4,
        0.5,
    )
    assert "below the minimum 0.500" in str(failure)


def test_a_regression_from_the_accepted_run_fails_and_names_the_baseline(tmp_path: Path) -> None:
    first = _result(_variant("triage-v1", 0.9))
    assert accept(first, gate(first, {}, THRESHOLDS), tmp_path) == ["m:triage-v1"]
    baselines = load_baselines(tmp_path)
    assert baselines["m:triage-v1"]["metrics"] == {VERDICT_EXACT_MATCH: 0.9}

    worse = _result(_variant("triage-v1", 0.8), run="r2")
    outcome = gate(worse, baselines, THRESHOLDS)
    (failure,) = outcome.failures["m:triage-v1"]
    assert (failure.kind, failure.baseline, failure.baseline_run) == ("regression", 0.9, "r1")
    assert accept(worse, outcome, tmp_path) == []  # a failed run never becomes the baseline
    assert load_baselines(tmp_path)["m:triage-v1"]["run_id"] == "r1"
    # A new dataset version is not comparable with the old baseline.
    assert gate(_result(_variant("triage-v1", 0.8), sha="b" * 64), baselines, THRESHOLDS).passed


def test_a_control_must_fail_and_passes_the_run_when_it_does() -> None:
    outcome = gate(
        _result(_variant("triage-v1", 0.9), _variant("triage-terse", 0.2)), {}, THRESHOLDS
    )
    assert outcome.passed
    assert not outcome.variants["m:triage-terse"].passed
    assert "control failed as expected" in outcome.summary()
    lax = gate(_result(_variant("triage-terse", 0.9)), {}, THRESHOLDS)
    assert not lax.passed
    assert "control PASSED" in lax.summary()


def test_too_many_unparsable_answers_fail_the_variant() -> None:
    assert gate(_result(_variant("triage-v1", 0.9, parse_failures=1)), {}, THRESHOLDS).passed
    outcome = gate(_result(_variant("triage-v1", 0.9, parse_failures=2)), {}, THRESHOLDS)
    (failure,) = outcome.failures["m:triage-v1"]
    assert (failure.metric, failure.value, failure.threshold) == ("parse_failure_rate", 0.2, 0.1)


def test_the_shipped_thresholds_cover_every_metric_and_name_the_control() -> None:
    shipped = load_thresholds()
    assert set(BASE_METRICS) <= set(shipped.metrics)
    assert all(shipped.metrics[m].min is not None for m in BASE_METRICS)
    assert shipped.controls == ("triage-terse",)
