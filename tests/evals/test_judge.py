"""LLM-judge metrics through the real gateway, to a loopback server speaking the OpenAI protocol
as the judge's upstream (a small rule-based judge: real HTTP, no model)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from evals.evaluate import evaluate
from evals.metrics import ANSWER_RELEVANCY, FAITHFULNESS, JUDGE_METRICS
from evals.runner import Variant
from sentinel.settings import PROJECT_ROOT, Settings

CASES = ["reverse-shell-01", "dns-txt-burst-02", "cron-persistence-03"]
# What a statement must not invent: hosts, addresses, domains absent from the evidence.
_FACT = re.compile(r"h-\d{3}|\b\d{1,3}(?:\.\d{1,3}){3}\b|\b[\w-]+\.example\b")


def _judge(prompt: str) -> dict[str, Any]:
    inp = json.loads(prompt.rsplit("input: ", 1)[1].rsplit("\nOutput:", 1)[0])
    if "answer" in inp:  # faithfulness, step 1: the answer's statements
        return {"statements": [s for s in re.split(r"(?<=\.)\s+", inp["answer"]) if s]}
    if "context" in inp:  # faithfulness, step 2: is each statement supported?
        return {
            "statements": [
                {
                    "statement": s,
                    "reason": "its hosts and addresses appear in the evidence",
                    "verdict": int(all(f in inp["context"] for f in _FACT.findall(s))),
                }
                for s in inp["statements"]
            ]
        }
    return {
        "question": "Is this alert a true positive, and what should be done?",
        "noncommittal": 0,
    }


@pytest.fixture
def judge_upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            content = json.dumps(_judge(body["messages"][-1]["content"]))
            reply = json.dumps(
                {
                    "id": f"chatcmpl-{len(seen)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


def test_judge_metrics_are_scored_through_the_gateway_when_a_judge_model_is_set(
    tmp_path: Path, judge_upstream: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = judge_upstream
    config = yaml.safe_load((PROJECT_ROOT / "services" / "gateway" / "gateway.yaml").read_text())
    config["upstreams"].append(
        {"name": "judge", "kind": "openai", "base_url": url, "timeout_s": 10, "max_retries": 0}
    )
    config["models"]["judge-llm"] = {"targets": [{"upstream": "judge", "model": "fake-judge"}]}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = Settings(
        state_dir=tmp_path / "state", gateway_config=path, evals_judge_model="judge-llm"
    )

    evaluation = evaluate(
        settings,
        variants=[Variant("extractive-triage", "triage-v1")],
        case_ids=CASES,
        mlflow=False,
    )

    result = evaluation.result
    assert result.judge_model == "judge-llm"
    assert result.skipped_metrics == []
    assert set(JUDGE_METRICS) <= set(result.metrics)
    (variant,) = result.variants
    assert variant.judge_errors == 0
    for case in variant.cases:
        assert 0.0 <= case.scores[FAITHFULNESS] <= 1.0  # type: ignore[operator]
        assert case.scores[ANSWER_RELEVANCY] is not None
    assert variant.metrics[FAITHFULNESS] is not None
    # Per case: one statement split, one NLI verdict, three questions for relevancy.
    assert len(seen) == 5 * len(CASES)
    assert {body["model"] for body in seen} == {"fake-judge"}
    report = json.loads(evaluation.paths.json.read_text())
    assert report["variants"][0]["metrics"][FAITHFULNESS] == variant.metrics[FAITHFULNESS]
