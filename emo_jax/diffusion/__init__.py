"""Diffusion math as pure functions: noise schedules (later: training loss, DDIM sampler, guidance)."""
