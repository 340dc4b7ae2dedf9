"""Ed25519 signatures on rule-pack messages, shared by the policy service, workers and agents.

The signature covers the canonical JSON of the message without its `signature` field: orjson
with sorted keys (recursively), no whitespace. Keys are files holding one line of base64: the
32 raw bytes of the Ed25519 private key (`<key id>.key`, mode 0600) or public key
(`<key id>.pub`). A key id is the first 16 hex digits of the SHA-256 of the raw public key, so it
is derived from the key itself and a renamed file cannot claim another key's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ALG = "ed25519"


class SignatureError(ValueError):
    """A pack that must not run: unsigned, unknown key, bad signature or a forbidden capability."""


class KeyFileError(ValueError):
    """A key file that cannot be read; the message names the file and what is wrong with it."""


def canonical(message: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the message minus `signature`, keys sorted, compact."""
    body = {k: v for k, v in message.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def digest(message: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical form: what the audit log records as before/after."""
    return hashlib.sha256(canonical(message)).hexdigest()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_pack(
    message: Mapping[str, Any], private_key: Ed25519PrivateKey, key_id: str | None = None
) -> dict[str, Any]:
    """A copy of `message` with a `signature` over its canonical form (any old one replaced)."""
    key_id = key_id or key_id_of(private_key.public_key())
    value = base64.b64encode(private_key.sign(canonical(message))).decode()
    body = {k: v for k, v in message.items() if k != "signature"}
    return {**body, "signature": {"alg": ALG, "key_id": key_id, "value": value}}


def check_capabilities(message: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise SignatureError naming the first rule that asks for a capability not in `allowed`."""
    allowed = set(allowed)
    for rule in message.get("rules") or []:
        if not isinstance(rule, Mapping):
            continue
        for capability in rule.get("capabilities") or []:
            if capability not in allowed:
                raise SignatureError(
                    f"capability not allowed: rule '{rule.get('id')}' asks for '{capability}' "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'}; "
                    "see SENTINEL_RULES_ALLOWED_CAPABILITIES)"
                )


def verify_pack(
    message: Mapping[str, Any],
    trusted: Mapping[str, Ed25519PublicKey],
    allowed_capabilities: Iterable[str],
) -> None:
    """Return quietly when `message` is signed by a trusted key and asks only for allowed
    capabilities; otherwise raise SignatureError saying which check failed."""
    name = f"pack '{message.get('name')}' {message.get('version')}"
    signature = message.get("signature")
    if not isinstance(signature, Mapping):
        raise SignatureError(f"unsigned: {name} has no signature and trusted keys are configured")
    if signature.get("alg") != ALG:
        raise SignatureError(
            f"bad signature: {name}: algorithm {signature.get('alg')!r} is not {ALG}"
        )
    key_id = signature.get("key_id")
    public_key = trusted.get(str(key_id))
    if public_key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise SignatureError(f"unknown key id: {name} is signed by {key_id!r}; trusted: {known}")
    try:
        raw = base64.b64decode(str(signature.get("value", "")), validate=True)
        public_key.verify(raw, canonical(message))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            f"bad signature: {name} does not match its signature by key {key_id} "
            "(the pack was changed after signing, or signed by another key)"
        ) from None
    check_capabilities(message, allowed_capabilities)


@dataclass(frozen=True)
class PackVerifier:
    """What a worker or agent demands of a pack from the rules topic before it runs it."""

    trusted: Mapping[str, Ed25519PublicKey]
    allowed_capabilities: frozenset[str] = field(default_factory=lambda: frozenset({"enrich"}))

    def verify(self, message: Mapping[str, Any]) -> None:
        verify_pack(message, self.trusted, self.allowed_capabilities)

    @classmethod
    def from_settings(cls, settings: Any) -> PackVerifier | None:
        """The verifier the settings ask for, or None when no trusted keys are configured."""
        path = settings.rules_trusted_keys
        if path is None:
            return None
        return cls(load_trusted_keys(Path(path)), frozenset(settings.rules_capabilities))


# ---------------------------------------------------------------- key files
def _read_b64(path: Path, what: str) -> bytes:
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except binascii.Error:
        raise KeyFileError(f"{path}: not base64 (a {what} file is one line of base64)") from None
    if len(raw) != 32:
        raise KeyFileError(f"{path}: a {what} is 32 bytes of base64, this one is {len(raw)}")
    return raw


def load_private_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    """The signing key in `path` and its key id."""
    key = Ed25519PrivateKey.from_private_bytes(_read_b64(path, "private key"))
    return key, key_id_of(key.public_key())


def load_public_key(path: Path) -> tuple[Ed25519PublicKey, str]:
    key = Ed25519PublicKey.from_public_bytes(_read_b64(path, "public key"))
    return key, key_id_of(key)


def load_trusted_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for a `.pub` file or every `*.pub` in a folder."""
    files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise KeyFileError(f"{path}: no *.pub files (SENTINEL_RULES_TRUSTED_KEYS)")
    trusted = {}
    for file in files:
        key, key_id = load_public_key(file)
        trusted[key_id] = key
    return trusted


def write_key_pair(directory: Path, key: Ed25519PrivateKey | None = None) -> str:
    """Write `<id>.key` (0600) and `<id>.pub` into `directory`; return the key id."""
    key = key or Ed25519PrivateKey.generate()
    key_id = key_id_of(key.public_key())
    directory.mkdir(parents=True, exist_ok=True)
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    private_path = directory / f"{key_id}.key"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(private).decode() + "\n")
    (directory / f"{key_id}.pub").write_text(base64.b64encode(public).decode() + "\n")
    return key_id


def keygen(directory: Path) -> str:
    """A new Ed25519 key pair in `directory`; returns its key id."""
    return write_key_pair(directory)


# ---------------------------------------------------------------- deployment envelope
def deployment_of(message: Mapping[str, Any]) -> tuple[str, bool]:
    """(target, rollback) of a published pack: the policy service adds a signed `deployment`
    object; a pack without one (`sentinel rules publish`) is for all workers and agents."""
    deployment = message.get("deployment")
    if not isinstance(deployment, Mapping):
        return "all", False
    return str(deployment.get("target") or "all"), bool(deployment.get("rollback"))


def is_for(message: Mapping[str, Any], groups: Iterable[str]) -> bool:
    """Whether a process in `groups` should run this pack: target `all` or one of its groups."""
    target, _ = deployment_of(message)
    return target == "all" or target in set(groups)
