"""Dagster orchestration of the lake, features, models and evaluations."""
