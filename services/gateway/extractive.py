"""`extractive-triage`: the gateway's built-in, deterministic triage model.

It writes a triage answer only from what the prompt showed it (the evidence block that
`streams.triage.prompts.build_messages` renders): the alert's facts, the rule's metadata and MITRE
mapping, and the enrichment of its host and addresses. No weights, no randomness, offline: a
baseline that the nightly evaluation holds real models against, and the embedded default that keeps
triage working end to end without a GPU. A prompt that hides the evidence gets a vaguer answer,
which is how a degraded prompt shows up in the evaluation.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from streams.triage.prompts import evidence_from_messages

MODEL_NAME = "extractive-triage"
_TOKEN = re.compile(r"\w+|[^\w\s]")

# Rules whose match is close to proof on its own; the rest need enrichment to be called.
_DECISIVE_RULES = {
    "core.reverse_shell",
    "core.ransom_note",
    "core.ransomware_mass_rename",
    "core.crypto_miner_exec",
    "core.mining_pool_connect",
    "core.ssh_bruteforce_success",
    "core.log_tampering",
}
# Host roles and tags under which a rule's behaviour is expected work, not an attack.
_BENIGN_WORDS = {
    "allowlist",
    "allowlisted",
    "approved",
    "backup",
    "build",
    "ci",
    "known-good",
    "known_good",
    "mail-security",
    "patching",
    "scanner",
    "vulnerability-scanner",
    "config-management",
}
_ARTIFACTS = (
    ("cmdline", "command line `{}`"),
    ("exe", "executable {}"),
    ("parent_exe", "parent {}"),
    ("path", "file {}"),
    ("query", "DNS query {}"),
    ("domain", "domain {}"),
    ("dst_ip", "destination {}"),
    ("src_ip", "source address {}"),
    ("new_extension", "new extension {}"),
)
_COUNTS = (
    ("failures_120s", "{} failed logins in 2 minutes"),
    ("failures_600s", "{} failed logins in 10 minutes before the success"),
    ("distinct_ports_60s", "{} distinct ports in 60 seconds"),
    ("renames_30s", "{} renames in 30 seconds"),
    ("txt_queries_60s", "{} TXT queries in 60 seconds"),
    ("distinct_users", "{} distinct user names"),
)
_ACTIONS_BY_KIND = {
    "proc": [
        "Isolate host {host} from the network until the process tree is reviewed",
        "Collect the binary and its parent process tree for analysis",
        "Review recent logins and sudo use {by_user}",
    ],
    "net": [
        "Block {dst} at the egress firewall",
        "Identify the process on {host} that opened the connection and collect it",
    ],
    "dns": [
        "Sinkhole or block the queried domain at the resolver",
        "Find the process on {host} that issued the queries",
    ],
    "auth": [
        "Block {src} at the perimeter and check for other targets",
        "Reset the credentials of user {user} and review the session",
    ],
    "file": [
        "Preserve the affected files and the process that wrote them",
        "Isolate host {host} and check backups before restoring",
    ],
}
_BENIGN_ACTIONS = [
    "Confirm the activity with the owner of host {host}",
    "Add a scoped allow-list entry or tune the rule so this expected activity stops alerting",
]


def _words(value: Any) -> set[str]:
    """Every lower-case word in the strings of a nested value."""
    out: set[str] = set()
    if isinstance(value, str):
        out.update(re.split(r"[\s,;|/]+", value.lower()))
    elif isinstance(value, dict):
        for key, item in value.items():
            if item is True:
                out.add(str(key).lower())
            out |= _words(item)
    elif isinstance(value, list):
        for item in value:
            out |= _words(item)
    return out


def _reputations(enrichment: dict[str, Any]) -> dict[str, str]:
    """{artifact: reputation} for every enriched artifact that has one."""
    found = {}
    for name, record in enrichment.items():
        if isinstance(record, dict) and isinstance(record.get("reputation"), str):
            found[name] = record["reputation"].lower()
    return found


class ExtractiveModel:
    """The deterministic triage model; `complete(messages)` returns the answer's JSON text."""

    name = MODEL_NAME

    @staticmethod
    def count_tokens(text: str) -> int:
        """Words and punctuation marks: close enough to BPE tokens for quotas and usage."""
        return len(_TOKEN.findall(text))

    def complete(self, messages: list[dict[str, Any]]) -> str:
        return orjson.dumps(self.triage(evidence_from_messages(messages))).decode()

    def triage(self, evidence: dict[str, Any]) -> dict[str, Any]:
        alert = evidence.get("alert")
        if not isinstance(alert, dict):
            return self._headline_only(evidence.get("headline") or {})
        rule = _mapping(evidence.get("rule"))
        enrichment = _mapping(evidence.get("enrichment"))
        context = _mapping(alert.get("context"))
        host = _mapping(alert.get("host"))
        host_name = str(host.get("name") or host.get("id") or "the host")
        user = str(context.get("user") or "")
        rule_id = str(_mapping(alert.get("rule")).get("id") or rule.get("id") or "")
        severity = str(alert.get("severity") or rule.get("severity") or "medium")

        reputations = _reputations(enrichment)
        malicious = sorted(a for a, r in reputations.items() if r == "malicious")
        suspicious = sorted(a for a, r in reputations.items() if r == "suspicious")
        benign_hits = sorted(_words(enrichment) & _BENIGN_WORDS)
        clean = sorted(a for a, r in reputations.items() if r == "benign")

        if malicious:
            verdict, confidence = "true_positive", min(0.95, 0.8 + 0.05 * len(malicious))
        elif benign_hits and not suspicious and rule_id not in _DECISIVE_RULES:
            verdict, confidence = "benign", 0.75
        elif rule_id in _DECISIVE_RULES or suspicious:
            verdict, confidence = "true_positive", 0.7
        elif clean and not suspicious:
            verdict, confidence = "benign", 0.6
        elif severity == "critical":
            verdict, confidence = "true_positive", 0.6
        else:
            verdict, confidence = "needs_review", 0.5

        title = str(alert.get("title") or rule.get("title") or "Alert")
        facts = [
            tmpl.format(context[k]) for k, tmpl in _ARTIFACTS if context.get(k) not in (None, "")
        ]
        counts = [
            tmpl.format(context[k]) for k, tmpl in _COUNTS if context.get(k) not in (None, "")
        ]
        who = f" by user {user}" if user else ""
        first = f"{title} on host {host_name}{who}"
        if facts:
            first += ": " + ", ".join(facts[:3])
        sentences = [first + "."]
        if counts:
            sentences.append("Observed " + ", ".join(counts) + ".")
        if int(alert.get("count") or 1) > 1:
            sentences.append(f"The rule matched {alert['count']} times in its window.")

        def label(artifact: str) -> str:
            record = _mapping(enrichment.get(artifact))
            value = record.get("indicator") or context.get(artifact) or record.get("name")
            return f"{artifact} {value}" if value else artifact

        if malicious:
            tags = sorted(
                {
                    t
                    for a in malicious
                    for t in enrichment[a].get("tags") or []
                    if isinstance(t, str)
                }
            )
            listed = f" ({', '.join(tags)})" if tags else ""
            sentences.append(
                f"Threat intelligence lists {', '.join(map(label, malicious))} as malicious{listed}."
            )
        elif suspicious:
            sentences.append(
                f"Threat intelligence marks {', '.join(map(label, suspicious))} as suspicious."
            )
        if verdict == "benign":
            reason = ", ".join(benign_hits) if benign_hits else "allow-listed infrastructure"
            sentences.append(f"The enrichment points to expected activity ({reason}).")
        elif rule.get("description"):
            sentences.append(f"Why it matters: {str(rule['description']).rstrip('.')}.")
        if verdict == "needs_review":
            sentences.append("The evidence does not decide it; an analyst should confirm.")

        fields = {
            "host": host_name,
            "user": user or "involved",
            "by_user": f"of user {user}" if user else f"on {host_name}",
            "dst": context.get("dst_ip") or "the destination",
            "src": context.get("src_ip") or "the source address",
        }
        kinds = rule.get("kinds") or [_kind_of(context)]
        templates = _BENIGN_ACTIONS if verdict == "benign" else _ACTIONS_BY_KIND.get(kinds[0], [])
        actions = [t.format(**fields) for t in templates]
        if verdict == "needs_review":
            actions.append(f"Ask the owner of {host_name} whether this activity was expected")
        mitre = [m for m in (alert.get("mitre") or rule.get("mitre") or []) if isinstance(m, str)]
        return {
            "verdict": verdict,
            "confidence": round(confidence, 2),
            "summary": " ".join(sentences),
            "recommended_actions": actions,
            "mitre": mitre,
        }

    @staticmethod
    def _headline_only(headline: dict[str, Any]) -> dict[str, Any]:
        title = headline.get("title") or "An alert"
        host = headline.get("host") or "an unnamed host"
        return {
            "verdict": "needs_review",
            "confidence": 0.3,
            "summary": f"{title} on {host}. No evidence was provided beyond the alert's title.",
            "recommended_actions": ["Review the alert and its events in the console"],
            "mitre": [],
        }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _kind_of(context: dict[str, Any]) -> str:
    if "query" in context or "domain" in context:
        return "dns"
    if "dst_ip" in context:
        return "net"
    if "src_ip" in context:
        return "auth"
    if "path" in context:
        return "file"
    return "proc"
