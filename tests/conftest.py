import os

# Parity needs full fp32 matmuls (the default on CPU, not on GPU/TPU); set before JAX initialises.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
