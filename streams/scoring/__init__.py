"""Online scoring: live per-host window counters, pushed to Feast, scored by the champion model
(and the challenger, in shadow). `windows` counts, `scorer` scores, `service` runs it in a worker.
"""
