"""Features and models shared by orchestration/ (training) and streams/ (scoring).

`features`: the Feast store of feature_repo/ under the settings' paths, exports and fetches.
`model`: the host-anomaly model: fit, score, evaluate, plots, drift.
`registry`: MLflow tracking and the model registry (versions, aliases).
"""
