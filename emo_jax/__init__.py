"""emo-jax: EMO (Emote Portrait Alive, arXiv 2402.17485) audio-to-video diffusion in JAX / Flax NNX."""

__version__ = "0.1.0"
