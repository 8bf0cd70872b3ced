"""Diffusion math as pure functions: noise schedules, the training objective (later: samplers, guidance)."""
