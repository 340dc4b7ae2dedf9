"""The detect stage: rule packs in the Rhai engine, alerts with deterministic ids, suppression."""
