"""Tests of the enrichment stage: feeds, resilience, the remote adapter and the enricher."""
