"""Scores of one triage answer against its reference, with ragas metrics.

Non-LLM metrics always run: verdict exact match, summary similarity (MiniLM embeddings, ROUGE-L,
Levenshtein) and MITRE overlap. The LLM-judge metrics (faithfulness, answer relevancy) run only
with a judge model, through the gateway; without one they are reported as skipped. An answer that
never came (gateway error) or did not parse scores 0 on every metric.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from ragas.llms.base import InstructorBaseRagasLLM
from ragas.metrics.collections import (
    AnswerRelevancy,
    DistanceMeasure,
    ExactMatch,
    Faithfulness,
    NonLLMStringSimilarity,
    RougeScore,
    SemanticSimilarity,
)

from evals.client import GatewayCallError, GatewayClient
from evals.dataset import GoldenCase
from evals.embeddings import MiniLMEmbeddings
from streams.triage.prompts import TriageAnswer

VERDICT_EXACT_MATCH = "verdict_exact_match"
SUMMARY_SEMANTIC = "summary_semantic_similarity"
SUMMARY_ROUGE_L = "summary_rouge_l"
SUMMARY_STRING = "summary_string_similarity"
MITRE_JACCARD = "mitre_jaccard"
FAITHFULNESS = "faithfulness"
ANSWER_RELEVANCY = "answer_relevancy"
BASE_METRICS = (
    VERDICT_EXACT_MATCH,
    SUMMARY_SEMANTIC,
    SUMMARY_ROUGE_L,
    SUMMARY_STRING,
    MITRE_JACCARD,
)
JUDGE_METRICS = (FAITHFULNESS, ANSWER_RELEVANCY)
DESCRIPTIONS = {
    VERDICT_EXACT_MATCH: "verdict equals the analyst's (ragas ExactMatch)",
    SUMMARY_SEMANTIC: "cosine of MiniLM embeddings, summary vs reference (ragas SemanticSimilarity)",
    SUMMARY_ROUGE_L: "ROUGE-L F1, summary vs reference (ragas RougeScore)",
    SUMMARY_STRING: "1 - normalised Levenshtein distance (ragas NonLLMStringSimilarity)",
    MITRE_JACCARD: "Jaccard overlap of ATT&CK ids with the reference (both empty = 1)",
    FAITHFULNESS: "share of the summary's claims the evidence supports (ragas Faithfulness, judge)",
    ANSWER_RELEVANCY: "how well the summary answers the triage question (ragas AnswerRelevancy, judge)",
}
T = TypeVar("T", bound=BaseModel)


def mitre_jaccard(predicted: list[str], reference: list[str]) -> float:
    a, b = set(predicted), set(reference)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _json_object(content: str) -> bytes:
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"the judge's answer holds no JSON object: {content[:200]!r}")
    return content[start : end + 1].encode()


class GatewayJudge(InstructorBaseRagasLLM):
    """A ragas LLM that asks `model` through the gateway and reads the JSON its prompt asks for.

    ragas' metric prompts already carry the output's JSON schema, so a plain chat completion
    works with any OpenAI-compatible upstream (no tool calling or JSON mode needed).
    """

    def __init__(self, client: GatewayClient, model: str) -> None:
        self.client = client
        self.model = model
        self.calls = 0

    async def agenerate(self, prompt: str, response_model: type[T]) -> T:
        self.calls += 1
        completion = await self.client.chat(
            self.model, [{"role": "user", "content": prompt}], rule="evals.judge"
        )
        return response_model.model_validate(orjson.loads(_json_object(completion.content)))

    def generate(self, prompt: str, response_model: type[T]) -> T:
        return asyncio.run(self.agenerate(prompt, response_model))


def triage_question(case: GoldenCase) -> str:
    """The question a triage answer responds to (the judge's `user_input`)."""
    alert = case.evidence["alert"]
    host = alert.get("host") or {}
    return (
        f"Triage the Sentinel alert '{alert.get('title')}' ({case.rule_id}, {alert.get('severity')})"
        f" on host {host.get('name') or host.get('id')}: is it a true positive, benign, or does it"
        " need review, what happened, and what should be done?"
    )


def evidence_contexts(case: GoldenCase) -> list[str]:
    """The evidence as the judge's retrieved contexts: one JSON text per section."""
    return [
        f"{key}: {orjson.dumps(value).decode()}"
        for key, value in case.evidence.items()
        if value and key in ("alert", "rule", "enrichment", "timeline")
    ]


@dataclass
class CaseScores:
    values: dict[str, float | None]  # None: a judge metric whose judge call failed
    judge_error: str | None = None


class Scorer:
    """The ragas metrics, built once per run."""

    def __init__(self, embeddings: MiniLMEmbeddings, judge: GatewayJudge | None = None) -> None:
        self.embeddings = embeddings
        self.judge = judge
        self.exact = ExactMatch(name=VERDICT_EXACT_MATCH)
        self.semantic = SemanticSimilarity(embeddings=embeddings, name=SUMMARY_SEMANTIC)
        self.rouge = RougeScore(name=SUMMARY_ROUGE_L, rouge_type="rougeL", mode="fmeasure")
        self.string = NonLLMStringSimilarity(
            name=SUMMARY_STRING, distance_measure=DistanceMeasure.LEVENSHTEIN
        )
        self.faithfulness = Faithfulness(llm=judge) if judge else None
        self.relevancy = AnswerRelevancy(llm=judge, embeddings=embeddings) if judge else None

    @property
    def metrics(self) -> tuple[str, ...]:
        return BASE_METRICS + (JUDGE_METRICS if self.judge else ())

    @property
    def skipped(self) -> tuple[str, ...]:
        return () if self.judge else JUDGE_METRICS

    async def score(self, case: GoldenCase, answer: TriageAnswer | None) -> CaseScores:
        if answer is None:
            return CaseScores(dict.fromkeys(self.metrics, 0.0))
        ref = case.reference
        values: dict[str, float | None] = {
            VERDICT_EXACT_MATCH: (
                await self.exact.ascore(reference=ref.verdict, response=answer.verdict)
            ).value,
            SUMMARY_SEMANTIC: (
                await self.semantic.ascore(reference=ref.summary, response=answer.summary)
            ).value,
            SUMMARY_ROUGE_L: (
                await self.rouge.ascore(reference=ref.summary, response=answer.summary)
            ).value,
            SUMMARY_STRING: (
                await self.string.ascore(reference=ref.summary, response=answer.summary)
            ).value,
            MITRE_JACCARD: mitre_jaccard(answer.mitre, ref.mitre),
        }
        judge_error = None
        if self.faithfulness is not None and self.relevancy is not None:
            question = triage_question(case)
            try:
                faithful = await self.faithfulness.ascore(
                    user_input=question,
                    response=answer.summary,
                    retrieved_contexts=evidence_contexts(case),
                )
                relevant = await self.relevancy.ascore(user_input=question, response=answer.summary)
                values[FAITHFULNESS] = _finite(faithful.value)
                values[ANSWER_RELEVANCY] = _finite(relevant.value)
            except (GatewayCallError, ValueError) as exc:
                judge_error = f"{type(exc).__name__}: {exc}"
                values[FAITHFULNESS] = values[ANSWER_RELEVANCY] = None
        return CaseScores({k: _as_float(v) for k, v in values.items()}, judge_error)


def _finite(value: Any) -> float | None:
    """ragas gives NaN when the judge found no statements; that is no score, not a zero."""
    number = float(value)
    return None if number != number else number


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)
