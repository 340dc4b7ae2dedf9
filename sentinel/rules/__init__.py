"""Rule packs: loading `pack.yaml` + `.rhai` files, checking them, running their golden tests,
and signing them (`sentinel.rules.signing`)."""

from sentinel.rules.pack import Pack, PackError, RuleSpec, load_pack, pack_from_message
from sentinel.rules.signing import PackVerifier, SignatureError, sign_pack, verify_pack

__all__ = [
    "Pack",
    "PackError",
    "PackVerifier",
    "RuleSpec",
    "SignatureError",
    "load_pack",
    "pack_from_message",
    "sign_pack",
    "verify_pack",
]
