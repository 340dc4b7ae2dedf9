"""Host sensors, the agent runtime, and the scenario generator with its replay into Kafka."""
