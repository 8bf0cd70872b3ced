"""Data: video preprocessing, the synthetic talking-face corpus, the TFDS dataset and the grain pipeline."""
