"""Alert triage: high-severity alerts go to the LLM gateway with a versioned prompt."""
