"""Structured logging for every Sentinel process: console lines for people, JSON lines for machines."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from sentinel.settings import Settings


def configure_logging(settings: Settings, *, install_handler: bool = True) -> None:
    """Route stdlib and structlog records through one renderer, chosen by `SENTINEL_LOG_FORMAT`.

    Inside a host that configures logging itself (a Faust worker, Dagster), pass
    `install_handler=False`: structlog then only formats, and the host's handlers write.
    """
    level = getattr(logging, settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # Embedded, the host's formatter already prints time and level.
    chain = (
        [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
        if install_handler
        else [structlog.contextvars.merge_contextvars, renderer]
    )
    structlog.configure(
        processors=chain,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    if not install_handler:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python is chatty about every connection and every slow poll.
    logging.getLogger("kafka").setLevel(max(level, logging.ERROR))
    # httpx logs every request at info: the gateway's request log has them.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    # rouge-score (ragas' ROUGE) says "Using default tokenizer." for every score.
    logging.getLogger("absl").setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
