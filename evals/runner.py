"""The evaluation run: every variant (model:prompt) answers every golden case through the gateway,
each answer is scored, and the scores are aggregated per variant and per rule."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from evals.client import GatewayCallError, GatewayClient, gateway_endpoint
from evals.dataset import VERDICTS, Dataset, GoldenCase
from sentinel.settings import Settings

if TYPE_CHECKING:
    from evals.metrics import Scorer
    from streams.triage.prompts import TriageAnswer

# How many cases of one variant are in flight at once (the gateway queues the rest).
CONCURRENCY = 4


class VariantError(ValueError):
    """A variant spec that is not model:prompt, or names an unknown prompt."""


@dataclass(frozen=True)
class Variant:
    model: str
    prompt: str

    @property
    def name(self) -> str:
        return f"{self.model}:{self.prompt}"


def parse_variants(spec: str) -> list[Variant]:
    """'model:prompt,model:prompt' -> variants, in order, without duplicates."""
    found: list[Variant] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        model, sep, prompt = item.rpartition(":")
        if not sep or not model or not prompt:
            raise VariantError(f"'{item}' is not model:prompt (e.g. extractive-triage:triage-v1)")
        variant = Variant(model.strip(), prompt.strip())
        if variant not in found:
            found.append(variant)
    if not found:
        raise VariantError(f"no variants in '{spec}'")
    return found


@dataclass
class CaseResult:
    case_id: str
    rule_id: str
    reference_verdict: str
    reference_summary: str
    verdict: str | None  # None: no usable answer
    summary: str | None
    answer: dict[str, Any] | None
    scores: dict[str, float | None]
    error: str | None = None
    error_kind: str | None = None  # "gateway" | "parse"
    judge_error: str | None = None
    latency_ms: float | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class VariantResult:
    variant: str
    model: str
    prompt: dict[str, str]  # id, version, sha256
    metrics: dict[str, float | None]  # mean over cases; None when no case has a score
    per_rule: dict[str, dict[str, float | None]]
    confusion: dict[str, dict[str, int]]  # reference verdict -> answered verdict ("failed")
    cases: list[CaseResult]
    parse_failures: int = 0
    gateway_errors: int = 0
    judge_errors: int = 0
    skipped_metrics: list[str] = field(default_factory=list)
    mean_latency_ms: float | None = None

    @property
    def answered(self) -> int:
        return len(self.cases) - self.parse_failures - self.gateway_errors


@dataclass
class EvalResult:
    run_id: str
    started_at: str
    finished_at: str
    dataset: dict[str, Any]  # name, version, sha256, path, cases
    gateway: dict[str, Any]  # base_url, embedded
    judge_model: str | None
    metrics: list[str]
    skipped_metrics: list[str]
    variants: list[VariantResult]

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.variant == name:
                return v
        raise KeyError(f"no variant '{name}' in run {self.run_id}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id(now: datetime | None = None) -> str:
    at = now or datetime.now(UTC)
    return f"{at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def aggregate(
    variant: Variant,
    prompt_ref: dict[str, str],
    cases: list[CaseResult],
    metrics: tuple[str, ...],
    skipped: tuple[str, ...],
) -> VariantResult:
    per_rule: dict[str, dict[str, float | None]] = {}
    for rule in sorted({c.rule_id for c in cases}):
        of_rule = [c for c in cases if c.rule_id == rule]
        per_rule[rule] = {m: _mean([c.scores.get(m) for c in of_rule]) for m in metrics}
    confusion = {ref: dict.fromkeys((*VERDICTS, "failed"), 0) for ref in VERDICTS}
    for c in cases:
        confusion[c.reference_verdict][c.verdict or "failed"] += 1
    latencies = [c.latency_ms for c in cases if c.latency_ms is not None]
    return VariantResult(
        variant=variant.name,
        model=variant.model,
        prompt=prompt_ref,
        metrics={m: _mean([c.scores.get(m) for c in cases]) for m in metrics},
        per_rule=per_rule,
        confusion=confusion,
        cases=cases,
        parse_failures=sum(c.error_kind == "parse" for c in cases),
        gateway_errors=sum(c.error_kind == "gateway" for c in cases),
        judge_errors=sum(c.judge_error is not None for c in cases),
        skipped_metrics=list(skipped),
        mean_latency_ms=sum(latencies) / len(latencies) if latencies else None,
    )


async def _run_variant(
    variant: Variant,
    dataset: Dataset,
    client: GatewayClient,
    scorer: Scorer,
    progress: Callable[[str, int, int], None],
) -> VariantResult:
    from streams.triage.prompts import (
        TriageFormatError,
        build_messages,
        load_prompt,
        parse_triage,
        rule_metadata,
    )

    try:
        prompt = load_prompt(variant.prompt)
    except ValueError as exc:  # PromptError: no such prompt, or a malformed one
        raise VariantError(f"variant {variant.name}: {exc}") from None
    gate = asyncio.Semaphore(CONCURRENCY)
    done = 0

    async def ask(case: GoldenCase) -> tuple[CaseResult, TriageAnswer | None]:
        evidence = {**case.evidence, "rule": rule_metadata(case.rule_id)}
        result = CaseResult(
            case_id=case.id,
            rule_id=case.rule_id,
            reference_verdict=case.reference.verdict,
            reference_summary=case.reference.summary,
            verdict=None,
            summary=None,
            answer=None,
            scores={},
            tags=list(case.tags),
        )
        answer = None
        async with gate:
            try:
                completion = await client.chat(
                    variant.model, build_messages(prompt, evidence), rule=case.rule_id
                )
                result.latency_ms = completion.latency_ms
                answer = parse_triage(completion.content)
            except GatewayCallError as exc:
                result.error, result.error_kind = str(exc), "gateway"
            except TriageFormatError as exc:
                result.error, result.error_kind = str(exc), "parse"
        if answer is not None:
            result.verdict, result.summary = answer.verdict, answer.summary
            result.answer = answer.as_dict()
        return result, answer

    async def score(case: GoldenCase, result: CaseResult, answer: TriageAnswer | None) -> None:
        nonlocal done
        async with gate:  # judge calls go through the gateway too
            scores = await scorer.score(case, answer)
        result.scores, result.judge_error = scores.values, scores.judge_error
        done += 1
        progress(variant.name, done, len(dataset.cases))

    # Every answer first, then the scores: CPU-bound scoring would otherwise delay the reads of
    # answers still in flight (and inflate their latency).
    answered = await asyncio.gather(*(ask(c) for c in dataset.cases))
    scorer.embeddings.prime([a.summary for _, a in answered if a is not None])
    await asyncio.gather(
        *(score(c, r, a) for c, (r, a) in zip(dataset.cases, answered, strict=True))
    )
    cases = [r for r, _ in answered]
    return aggregate(variant, prompt.ref, cases, scorer.metrics, scorer.skipped)


def run_evaluation(
    settings: Settings,
    dataset: Dataset,
    variants: list[Variant],
    *,
    run_id: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalResult:
    """Evaluate `variants` on `dataset` through the gateway `settings` name (or an embedded one)."""
    from evals.embeddings import MiniLMEmbeddings
    from evals.metrics import GatewayJudge, Scorer

    started = datetime.now(UTC)
    report = progress or (lambda variant, done, total: None)
    embeddings = MiniLMEmbeddings()
    embeddings.prime([c.reference.summary for c in dataset.cases])
    with gateway_endpoint(settings) as endpoint:

        async def run_all() -> list[VariantResult]:
            # The workers' time limit and retry policy: an evaluation calls as triage does.
            client = GatewayClient(
                endpoint.base_url,
                endpoint.api_key,
                timeout_s=settings.triage_timeout_s,
                attempts=settings.triage_max_attempts,
                backoff_s=settings.triage_retry_backoff_s,
            )
            judge = (
                GatewayJudge(client, settings.evals_judge_model)
                if settings.evals_judge_model
                else None
            )
            scorer = Scorer(embeddings, judge)
            try:
                return [await _run_variant(v, dataset, client, scorer, report) for v in variants]
            finally:
                await client.aclose()

        results = asyncio.run(run_all())
    from evals.metrics import BASE_METRICS, JUDGE_METRICS

    judged = settings.evals_judge_model is not None
    return EvalResult(
        run_id=run_id or new_run_id(started),
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        dataset={
            "name": dataset.name,
            "version": dataset.version,
            "sha256": dataset.sha256,
            "path": str(dataset.path),
            "cases": len(dataset.cases),
        },
        gateway={"base_url": endpoint.base_url, "embedded": endpoint.embedded},
        judge_model=settings.evals_judge_model,
        metrics=list(BASE_METRICS + (JUDGE_METRICS if judged else ())),
        skipped_metrics=[] if judged else list(JUDGE_METRICS),
        variants=results,
    )
