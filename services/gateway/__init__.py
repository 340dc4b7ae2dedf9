"""The OpenAI-compatible LLM gateway in front of vLLM (keys, quotas, fallbacks, logs, tools)."""
