"""Sentinel Lab services: the LLM gateway and the policy orchestrator."""
