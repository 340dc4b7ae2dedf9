"""Versioned triage prompts: loading them, rendering an alert's evidence into chat messages, and
reading the model's JSON answer back.

Prompts live in `streams/triage/prompts/<id>.yaml`; a prompt's identity is its id, its version and
the sha256 of its file, and all three travel with every triage record and evaluation run.
The evidence goes into the last user message as one fenced JSON block, so any model (and the
gateway's built-in extractive model) reads exactly the sections the prompt chose to show.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from sentinel.rules import load_pack
from sentinel.settings import PROJECT_ROOT

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
CORE_PACK = PROJECT_ROOT / "rules" / "core"
VERDICTS = ("true_positive", "benign", "needs_review")
# The evidence sections a prompt may show, in the order they are rendered.
SECTIONS = ("headline", "alert", "rule", "enrichment", "timeline")
EVIDENCE_FENCE = "```json"
_MITRE = re.compile(r"^T[0-9]{4}(\.[0-9]{3})?$")
_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.DOTALL)


class PromptError(ValueError):
    """A prompt file that is missing or malformed."""


class TriageFormatError(ValueError):
    """A model answer that is not the triage JSON the prompt asked for; the message says why."""


@dataclass(frozen=True)
class Prompt:
    id: str
    version: str
    sha256: str
    description: str
    system: str
    instructions: str
    include: tuple[str, ...]

    @property
    def ref(self) -> dict[str, str]:
        """What a triage record or an evaluation run stores about its prompt."""
        return {"id": self.id, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class TriageAnswer:
    verdict: str
    confidence: float
    summary: str
    recommended_actions: list[str] = field(default_factory=list)
    mitre: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "confidence": self.confidence,
            "summary": self.summary,
            "recommended_actions": list(self.recommended_actions),
            "mitre": list(self.mitre),
        }


def _read_prompt(path: Path) -> Prompt:
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PromptError(f"{path}: expected a mapping")
    missing = [k for k in ("id", "version", "system", "instructions", "include") if k not in doc]
    if missing:
        raise PromptError(f"{path}: missing {', '.join(missing)}")
    if doc["id"] != path.stem:
        raise PromptError(f"{path}: id '{doc['id']}' differs from the file name '{path.stem}'")
    include = tuple(doc["include"])
    unknown = [s for s in include if s not in SECTIONS]
    if unknown or not include:
        raise PromptError(
            f"{path}: include has {unknown or 'nothing'}; choose from {', '.join(SECTIONS)}"
        )
    return Prompt(
        id=str(doc["id"]),
        version=str(doc["version"]),
        sha256=hashlib.sha256(raw).hexdigest(),
        description=str(doc.get("description", "")),
        system=str(doc["system"]).strip(),
        instructions=str(doc["instructions"]).strip(),
        include=include,
    )


def list_prompts(directory: Path = PROMPTS_DIR) -> list[Prompt]:
    return [_read_prompt(p) for p in sorted(directory.glob("*.yaml"))]


def load_prompt(prompt_id: str, directory: Path = PROMPTS_DIR) -> Prompt:
    path = directory / f"{prompt_id}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.yaml")))
        raise PromptError(f"no prompt '{prompt_id}' in {directory} (known: {known})")
    return _read_prompt(path)


@lru_cache(maxsize=8)
def _pack_rules(pack_dir: Path) -> dict[str, Any]:
    pack = load_pack(pack_dir)
    return {rule.id: (pack, rule) for rule in pack.rules}


def rule_metadata(rule_id: str, pack_dir: Path = CORE_PACK) -> dict[str, Any]:
    """What the model is told about a rule: title, severity, MITRE, kinds and its description."""
    found = _pack_rules(pack_dir.resolve()).get(rule_id)
    if found is None:
        return {"id": rule_id}
    pack, rule = found
    description = rule.description or _leading_comment(rule.source)
    return {
        "id": rule.id,
        "pack": pack.name,
        "title": rule.title,
        "severity": rule.severity,
        "kinds": list(rule.kinds),
        "mitre": list(rule.mitre),
        "description": description,
    }


def _leading_comment(source: str) -> str:
    lines = []
    for line in source.splitlines():
        if not line.startswith("//"):
            break
        lines.append(line.lstrip("/").strip())
    return " ".join(lines)


def _headline(alert: dict[str, Any]) -> dict[str, Any]:
    host = alert.get("host") or {}
    return {
        "title": alert.get("title"),
        "severity": alert.get("severity"),
        "host": host.get("name") or host.get("id"),
        "rule_id": (alert.get("rule") or {}).get("id"),
    }


def render_evidence(prompt: Prompt, evidence: dict[str, Any]) -> dict[str, Any]:
    """The sections of `evidence` this prompt shows (absent or empty sections are left out)."""
    shown: dict[str, Any] = {}
    for section in prompt.include:
        if section == "headline":
            value: Any = _headline(evidence.get("alert") or {})
        else:
            value = evidence.get(section)
        if value:
            shown[section] = value
    return shown


def build_messages(prompt: Prompt, evidence: dict[str, Any]) -> list[dict[str, str]]:
    """OpenAI chat messages for one alert: `evidence` has `alert` and, optionally, `rule`,
    `enrichment` (dict) and `timeline` (list of {ts, kind, summary})."""
    block = orjson.dumps(render_evidence(prompt, evidence), option=orjson.OPT_INDENT_2).decode()
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": f"{prompt.instructions}\n\n{EVIDENCE_FENCE}\n{block}\n```"},
    ]


def evidence_from_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The evidence block of the last user message that has one ({} when none does)."""
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        blocks = _JSON_BLOCK.findall(content)
        if not blocks:
            continue
        try:
            value = orjson.loads(blocks[-1])
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def _json_object(content: str) -> dict[str, Any]:
    text = content.strip()
    fenced = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise TriageFormatError("the answer holds no JSON object")
    try:
        value = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError as exc:
        raise TriageFormatError(f"the answer's JSON does not parse: {exc}") from None
    if not isinstance(value, dict):
        raise TriageFormatError("the answer's JSON is not an object")
    return value


def parse_triage(content: str) -> TriageAnswer:
    """Read a model's answer; raises TriageFormatError saying which field is wrong."""
    doc = _json_object(content)
    verdict = doc.get("verdict")
    if verdict not in VERDICTS:
        raise TriageFormatError(f"verdict is {verdict!r}; expected one of {', '.join(VERDICTS)}")
    confidence = doc.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise TriageFormatError(f"confidence is {confidence!r}; expected a number from 0 to 1")
    if not 0 <= confidence <= 1:
        raise TriageFormatError(f"confidence {confidence} is outside 0..1")
    summary = doc.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise TriageFormatError("summary is missing or empty")
    actions = doc.get("recommended_actions") or []
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise TriageFormatError("recommended_actions must be a list of strings")
    mitre = doc.get("mitre") or []
    if not isinstance(mitre, list):
        raise TriageFormatError("mitre must be a list of technique ids")
    bad = [m for m in mitre if not isinstance(m, str) or not _MITRE.match(m)]
    if bad:
        raise TriageFormatError(f"mitre has ids that are not ATT&CK technique ids: {bad}")
    return TriageAnswer(
        verdict=str(verdict),
        confidence=float(confidence),
        summary=summary.strip(),
        recommended_actions=[a.strip() for a in actions if a.strip()],
        mitre=list(dict.fromkeys(mitre)),
    )
