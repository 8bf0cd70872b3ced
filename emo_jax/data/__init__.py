"""Data: the synthetic talking-face corpus (later: preprocessing, TFDS dataset, grain pipeline)."""
