"""Sentinel Lab's shared core: settings, Kafka helpers, contracts, logging and the `sentinel` CLI."""

__version__ = "0.1.0"
