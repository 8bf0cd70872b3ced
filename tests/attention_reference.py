"""Softmax attention in float64 numpy: what every attention implementation's test compares against."""

import numpy as np


def reference_attention(q, k, v):
    """numpy float64 softmax(q k^T / sqrt(d)) v over [B, T, N, D]."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnd->btnd", weights, v)
