"""Data quality: per-shard signatures (`signatures`), the inputs and output view shared by the cleaning commands
(`selection`), `dedup` and `decontaminate`."""
