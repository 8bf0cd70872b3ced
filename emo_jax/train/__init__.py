"""Training: which parameters train (later: trainer, sharding, checkpointing)."""
