"""The numpy MiniLM: what sentence-transformers computes for all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from evals.embeddings import MiniLMEmbeddings, MiniLMEncoder, cosine, default_encoder


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return default_encoder()


def test_it_reproduces_the_similarities_sentence_transformers_publishes(
    encoder: MiniLMEncoder,
) -> None:
    # The quickstart of the sentence-transformers README, computed with torch for this model.
    vectors = encoder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    similarities = vectors @ vectors.T
    expected = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    assert vectors.shape == (3, 384)
    assert np.abs(similarities - expected).max() < 5e-4


def test_paraphrases_score_far_above_unrelated_sentences(encoder: MiniLMEncoder) -> None:
    a, b, c, d = encoder.encode(
        [
            "The web server spawned a reverse shell to a known C2 address.",
            "A reverse shell was opened from the web server to a command-and-control host.",
            "The quarterly sales report is due on Friday.",
            "A nightly backup job renamed old database dumps.",
        ]
    )
    paraphrase = cosine(a, b)
    assert paraphrase > 0.7
    assert paraphrase - max(cosine(a, c), cosine(a, d)) > 0.4


def test_embeddings_are_unit_norm_and_deterministic(encoder: MiniLMEncoder) -> None:
    texts = ["ssh brute force from 198.51.100.230", "", "x" * 5000]  # empty and truncated too
    first, second = encoder.encode(texts), encoder.encode(texts)
    assert first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, second)


def test_a_batch_gives_each_sentence_the_embedding_it_gets_alone(encoder: MiniLMEncoder) -> None:
    # Different lengths in one batch: the short ones are padded, which must not change them.
    texts = [
        "cron file written",
        "A hidden cron file restarts the implant as root every minute on web-1.",
        "port scan",
        "bob used sudo journalctl --vacuum-size=200M after the disk reached 97 percent.",
    ]
    batched = MiniLMEncoder(encoder.folder, batch_size=4).encode(texts)
    for text, row in zip(texts, batched, strict=True):
        alone = encoder.encode([text])[0]
        assert np.abs(alone - row).max() < 1e-5


def test_the_ragas_wrapper_serves_batches_and_single_texts_alike(encoder: MiniLMEncoder) -> None:
    embeddings = MiniLMEmbeddings(encoder)
    texts = ["beaconing to 203.0.113.66", "log files shredded"]
    batch = embeddings.embed_texts(texts)
    assert len(batch) == 2 and len(batch[0]) == 384
    single = asyncio.run(embeddings.aembed_text(texts[1]))
    assert np.allclose(single, encoder.encode([texts[1]])[0], atol=1e-6)
