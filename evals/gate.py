"""The evaluation gate: per-metric minimums (`thresholds.yaml`), no regression beyond a margin
from each variant's last accepted run, and accepted baselines (`<evals_root>/accepted.json`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from evals.runner import EvalResult, VariantResult

DEFAULT_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.yaml"
ACCEPTED_FILE = "accepted.json"


class ThresholdsError(ValueError):
    """A thresholds file that cannot be used."""


@dataclass(frozen=True)
class MetricThreshold:
    min: float | None = None
    max_regression: float | None = None


@dataclass(frozen=True)
class Thresholds:
    metrics: dict[str, MetricThreshold]
    max_rates: dict[str, float]
    controls: tuple[str, ...]  # prompt ids expected to fail
    source: str = "<memory>"


def load_thresholds(path: Path = DEFAULT_THRESHOLDS) -> Thresholds:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ThresholdsError(f"cannot read thresholds {path}: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise ThresholdsError(f"{path}: expected a mapping at the top")
    metrics: dict[str, MetricThreshold] = {}
    for name, spec in (doc.get("metrics") or {}).items():
        unknown = set(spec or {}) - {"min", "max_regression"}
        if unknown:
            raise ThresholdsError(f"{path}: metrics.{name}: unknown keys {sorted(unknown)}")
        metrics[name] = MetricThreshold(
            min=_number(spec.get("min"), f"{path}: metrics.{name}.min"),
            max_regression=_number(
                spec.get("max_regression"), f"{path}: metrics.{name}.max_regression"
            ),
        )
    rates = {
        k: float(_number(v, f"{path}: max_rates.{k}") or 0.0)
        for k, v in (doc.get("max_rates") or {}).items()
    }
    unknown_rates = set(rates) - {"parse_failure_rate", "gateway_error_rate"}
    if unknown_rates:
        raise ThresholdsError(f"{path}: max_rates: unknown {sorted(unknown_rates)}")
    return Thresholds(metrics, rates, tuple(doc.get("controls") or ()), str(path))


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdsError(f"{where}: expected a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Failure:
    metric: str
    kind: str  # "min" | "regression" | "rate"
    value: float
    threshold: float  # the minimum, the allowed fall, or the maximum rate
    baseline: float | None = None
    baseline_run: str | None = None

    def __str__(self) -> str:
        if self.kind == "regression":
            before = self.baseline or 0.0
            return (
                f"{self.metric} {self.value:.3f} fell {before - self.value:.3f} from "
                f"{before:.3f} (accepted run {self.baseline_run}); at most "
                f"{self.threshold:.3f} allowed"
            )
        if self.kind == "rate":
            return f"{self.metric} {self.value:.3f} above the maximum {self.threshold:.3f}"
        return f"{self.metric} {self.value:.3f} below the minimum {self.threshold:.3f}"


@dataclass
class VariantGate:
    variant: str
    prompt: str
    control: bool  # a degraded prompt that must fail
    failures: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # gated metrics this run did not score
    baseline_run: str | None = None

    @property
    def passed(self) -> bool:
        """The variant met every threshold."""
        return not self.failures

    @property
    def ok(self) -> bool:
        """What the run's outcome needs: a real variant passes, a control fails."""
        return self.passed != self.control

    def summary(self) -> str:
        if self.control:
            return (
                f"{self.variant}: control failed as expected ({len(self.failures)} failure(s))"
                if self.failures
                else f"{self.variant}: control PASSED the gate: the thresholds no longer tell a "
                "degraded prompt from a real one"
            )
        if self.passed:
            return f"{self.variant}: passed"
        return f"{self.variant}: FAILED: " + "; ".join(str(f) for f in self.failures)


@dataclass
class GateOutcome:
    thresholds: str
    variants: dict[str, VariantGate]

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.variants.values())

    @property
    def failures(self) -> dict[str, list[Failure]]:
        return {name: v.failures for name, v in self.variants.items() if v.failures}

    def summary(self) -> str:
        return "\n".join(v.summary() for v in self.variants.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "thresholds": self.thresholds,
            "variants": {
                name: {
                    **asdict(v),
                    "passed": v.passed,
                    "ok": v.ok,
                    "failures": [{**asdict(f), "message": str(f)} for f in v.failures],
                }
                for name, v in self.variants.items()
            },
        }


Baselines = dict[str, dict[str, Any]]  # variant -> {run_id, accepted_at, dataset, prompt, metrics}


def _gate_variant(
    result: EvalResult, v: VariantResult, baseline: dict[str, Any] | None, t: Thresholds
) -> VariantGate:
    outcome = VariantGate(v.variant, v.prompt["id"], control=v.prompt["id"] in t.controls)
    # A baseline on another dataset version is not comparable; the next accepted run replaces it.
    before: dict[str, float] = {}
    if baseline is not None and baseline.get("dataset_sha256") == result.dataset["sha256"]:
        outcome.baseline_run = str(baseline["run_id"])
        before = dict(baseline.get("metrics") or {})
    for metric, limit in t.metrics.items():
        value = v.metrics.get(metric)
        if value is None:
            if metric in result.metrics or metric in v.skipped_metrics:
                outcome.skipped.append(metric)
            continue
        if limit.min is not None and value < limit.min:
            outcome.failures.append(Failure(metric, "min", value, limit.min))
        accepted = before.get(metric)
        if (
            limit.max_regression is not None
            and accepted is not None
            and accepted - value > limit.max_regression + 1e-12
        ):
            outcome.failures.append(
                Failure(
                    metric,
                    "regression",
                    value,
                    limit.max_regression,
                    accepted,
                    outcome.baseline_run,
                )
            )
    total = max(len(v.cases), 1)
    rates = {
        "parse_failure_rate": v.parse_failures / total,
        "gateway_error_rate": v.gateway_errors / total,
    }
    for name, ceiling in t.max_rates.items():
        if rates[name] > ceiling:
            outcome.failures.append(Failure(name, "rate", rates[name], ceiling))
    return outcome


def gate(
    result: EvalResult, baseline: Baselines | None = None, thresholds: Thresholds | None = None
) -> GateOutcome:
    """Check every variant of `result` against the thresholds and its accepted baseline."""
    t = thresholds or load_thresholds()
    return GateOutcome(
        t.source,
        {
            v.variant: _gate_variant(result, v, (baseline or {}).get(v.variant), t)
            for v in result.variants
        },
    )


def accepted_path(root: Path) -> Path:
    return root / ACCEPTED_FILE


def load_baselines(root: Path) -> Baselines:
    path = accepted_path(root)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return dict(data.get("variants") or {})


def accept(result: EvalResult, outcome: GateOutcome, root: Path) -> list[str]:
    """Make each variant that passed (and is no control) the accepted baseline; their names."""
    baselines = load_baselines(root)
    accepted = []
    for v in result.variants:
        verdict = outcome.variants[v.variant]
        if not verdict.passed or verdict.control:
            continue
        baselines[v.variant] = {
            "run_id": result.run_id,
            "accepted_at": datetime.now(UTC).isoformat(),
            "dataset": result.dataset["name"],
            "dataset_version": result.dataset["version"],
            "dataset_sha256": result.dataset["sha256"],
            "prompt": v.prompt,
            "metrics": {k: x for k, x in v.metrics.items() if x is not None},
        }
        accepted.append(v.variant)
    if accepted:
        path = accepted_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"variants": baselines}, indent=2, sort_keys=True))
        os.replace(tmp, path)  # readers never see half a file
    return accepted
