"""The rule and policy orchestrator: packs, golden-test gates, approvals, signing, deploys, RBAC,
a hash-chained audit log and HTTP ingest. `services.policy.app.create_app` is the one way in."""
