"""Rule packs: loading `pack.yaml` + `.rhai` files, checking them, and running their golden tests."""

from sentinel.rules.pack import Pack, PackError, RuleSpec, load_pack, pack_from_message

__all__ = ["Pack", "PackError", "RuleSpec", "load_pack", "pack_from_message"]
