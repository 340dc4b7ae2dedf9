"""Scores of hand-made answers: a perfect one near 1, a wrong verdict 0, no answer 0."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from evals.dataset import Dataset, GoldenCase
from evals.embeddings import MiniLMEmbeddings
from evals.metrics import (
    BASE_METRICS,
    JUDGE_METRICS,
    MITRE_JACCARD,
    SUMMARY_ROUGE_L,
    SUMMARY_SEMANTIC,
    SUMMARY_STRING,
    VERDICT_EXACT_MATCH,
    Scorer,
    mitre_jaccard,
)
from streams.triage.prompts import TriageAnswer


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(MiniLMEmbeddings())


@pytest.fixture
def case(golden: Dataset) -> GoldenCase:
    return next(c for c in golden.cases if c.id == "reverse-shell-01")


def _answer(case: GoldenCase, **changes: object) -> TriageAnswer:
    ref = case.reference
    perfect = TriageAnswer(ref.verdict, 0.9, ref.summary, ref.recommended_actions, ref.mitre)
    return replace(perfect, **changes)  # type: ignore[arg-type]


def test_the_reference_itself_scores_one_on_every_metric(scorer: Scorer, case: GoldenCase) -> None:
    scores = asyncio.run(scorer.score(case, _answer(case))).values
    assert set(scores) == set(BASE_METRICS)
    for metric in BASE_METRICS:
        assert scores[metric] == pytest.approx(1.0, abs=1e-5), metric


def test_a_wrong_verdict_scores_zero_on_exact_match_but_keeps_its_summary_scores(
    scorer: Scorer, case: GoldenCase
) -> None:
    scores = asyncio.run(scorer.score(case, _answer(case, verdict="benign"))).values
    assert scores[VERDICT_EXACT_MATCH] == 0.0
    assert scores[SUMMARY_SEMANTIC] == pytest.approx(1.0, abs=1e-5)


def test_a_paraphrase_scores_high_semantically_and_low_on_string_overlap(
    scorer: Scorer, case: GoldenCase
) -> None:
    paraphrase = (
        "An attacker exploited the web app on web-2 and got an interactive shell back to "
        "198.51.100.23, a known command-and-control server, as www-data."
    )
    unrelated = "Scheduled backup rotation on the database host renamed old dump files."
    near = asyncio.run(scorer.score(case, _answer(case, summary=paraphrase))).values
    far = asyncio.run(scorer.score(case, _answer(case, summary=unrelated))).values
    assert near[SUMMARY_SEMANTIC] > 0.6
    assert near[SUMMARY_SEMANTIC] - far[SUMMARY_SEMANTIC] > 0.3
    assert near[SUMMARY_ROUGE_L] < 0.5 and near[SUMMARY_STRING] < 0.6
    assert far[SUMMARY_ROUGE_L] < near[SUMMARY_ROUGE_L]


def test_no_answer_scores_zero_everywhere(scorer: Scorer, case: GoldenCase) -> None:
    scores = asyncio.run(scorer.score(case, None)).values
    assert scores == dict.fromkeys(BASE_METRICS, 0.0)


def test_without_a_judge_the_judge_metrics_are_skipped_not_scored(scorer: Scorer) -> None:
    assert scorer.metrics == BASE_METRICS
    assert scorer.skipped == JUDGE_METRICS


def test_mitre_overlap_is_jaccard_and_two_empty_lists_agree() -> None:
    assert mitre_jaccard([], []) == 1.0
    assert mitre_jaccard(["T1059.004"], []) == 0.0
    assert mitre_jaccard(["T1059.004", "T1105"], ["T1059.004", "T1190"]) == pytest.approx(1 / 3)
    assert MITRE_JACCARD in BASE_METRICS
