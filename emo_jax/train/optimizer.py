"""The optimizer of a training config: AdamW with linear warm-up and global-norm clipping (optax).

Only the stage's trainable parameters are given to it (the trainer splits them off), so frozen parameters
get no optimizer state at all.
"""

from __future__ import annotations

import ml_collections
import optax


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """0 -> `learning_rate` linearly over `warmup_steps`, then constant (the paper's fixed 1e-5)."""
    o = config.optimizer
    return optax.join_schedules(
        [optax.linear_schedule(0.0, o.learning_rate, max(o.warmup_steps, 1)), optax.constant_schedule(o.learning_rate)],
        [max(o.warmup_steps, 1)],
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    o = config.optimizer
    return optax.chain(
        optax.clip_by_global_norm(o.clip_norm),
        optax.adamw(learning_rate(config), b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
    )
