"""Shared pieces of the Dagster code location: landing, bronze layout, resources, dbt, gates."""
