"""Enrichment stage: threat intel, file reputation and host inventory for events and rules."""

from streams.enrichment.adapters import (
    FeedError,
    FileHashReputation,
    HostInventory,
    IpReputation,
    LocalFeed,
)
from streams.enrichment.enricher import BatchEnrichment, Enricher, EnrichmentConfig
from streams.enrichment.metrics import EnrichmentMetrics
from streams.enrichment.remote import RemoteAnswer, RemoteLookup

__all__ = [
    "BatchEnrichment",
    "Enricher",
    "EnrichmentConfig",
    "EnrichmentMetrics",
    "FeedError",
    "FileHashReputation",
    "HostInventory",
    "IpReputation",
    "LocalFeed",
    "RemoteAnswer",
    "RemoteLookup",
]
