"""Who may call what: roles, API keys (SHA-256 at rest) and the one table of endpoint roles.

Roles rank viewer < author < approver < deployer < admin: a role may do what the roles below it
may. `agent` stands apart: an agent's key may only ingest events and report heartbeats.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

RANKED = ("viewer", "author", "approver", "deployer", "admin")
ROLES = (*RANKED, "agent")
KEY_PREFIX = "spk_"


def at_least(role: str) -> frozenset[str]:
    return frozenset(RANKED[RANKED.index(role) :])


AGENTS = frozenset({"agent", "admin"})

# Route name (the endpoint function) -> the roles allowed to call it. Every route is here; a test
# walks this whole table against every role.
# None marks a public route (no key needed).
ENDPOINT_ROLES: dict[str, frozenset[str] | None] = {
    "health": None,
    "whoami": frozenset(ROLES),
    "list_packs": at_least("viewer"),
    "get_pack": at_least("viewer"),
    "create_pack": at_least("author"),
    "deprecate_pack": at_least("deployer"),
    "list_versions": at_least("viewer"),
    "get_version": at_least("viewer"),
    "upload_version": at_least("author"),
    "diff_versions": at_least("viewer"),
    "approve_version": at_least("approver"),
    "deprecate_version": at_least("deployer"),
    "deploy_version": at_least("deployer"),
    "rollback_pack": at_least("deployer"),
    "list_deployments": at_least("viewer"),
    "post_heartbeat": AGENTS,
    "list_heartbeats": at_least("viewer"),
    "list_audit": at_least("viewer"),
    "verify_audit": at_least("viewer"),
    "list_users": at_least("admin"),
    "create_user": at_least("admin"),
    "ingest": AGENTS,
}


def describe(allowed: frozenset[str]) -> str:
    """'approver (or higher)' or 'agent or admin': the wording of a 403."""
    for role in RANKED:
        if allowed == at_least(role):
            return f"{role}" + (" (or higher)" if role != "admin" else "")
    return " or ".join(r for r in ROLES if r in allowed)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # API keys are 256 random bits: a fast hash is enough, no salt or stretching needed.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
