"""Hot reload: every worker follows the compacted `sentinel.rules.v1` from its start.

Each worker reads the whole topic (no consumer group), so every worker sees every pack. A valid,
newer pack is compiled and swapped in atomically; a broken one is logged and the old rules run on.
With `SENTINEL_RULES_TRUSTED_KEYS` set, a pack must also carry a valid signature by one of those
keys and ask only for allowed capabilities (sentinel/rules/signing.py), or it is rejected.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from sentinel.kafka import RULES
from sentinel.logs import get_logger
from sentinel.rules.signing import PackVerifier
from streams.app import app
from streams.runtime import runtime

log = get_logger(__name__)


@app.task
async def follow_rule_packs() -> None:
    rt = runtime()
    rt.ruleset.verifier = PackVerifier.from_settings(rt.settings)
    rt.ruleset.groups = rt.settings.rules_group_set
    if rt.ruleset.verifier is not None:
        log.info(
            "rule packs must be signed",
            trusted_keys=sorted(rt.ruleset.verifier.trusted),
            capabilities=sorted(rt.ruleset.verifier.allowed_capabilities),
        )
    while True:
        consumer = AIOKafkaConsumer(
            RULES,
            bootstrap_servers=rt.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{rt.settings.streams_app_id}-rules",
        )
        try:
            await consumer.start()
            async for message in consumer:
                offer = rt.ruleset.offer(message.value or b"")
                pack = (message.key or b"?").decode(errors="replace")
                if offer.applied:
                    log.info(
                        "rule pack reloaded",
                        pack=pack,
                        offset=message.offset,
                        result=offer.reason,
                        rules=len(rt.ruleset.rules),
                    )
                elif offer.reason.startswith("rejected"):
                    log.error(
                        "rule pack rejected", pack=pack, offset=message.offset, reason=offer.reason
                    )
                else:
                    log.info(
                        "rule pack skipped", pack=pack, offset=message.offset, reason=offer.reason
                    )
        except KafkaError as exc:
            log.warning("rules topic unavailable; retrying", error=repr(exc))
            await asyncio.sleep(2)
        finally:
            await consumer.stop()
