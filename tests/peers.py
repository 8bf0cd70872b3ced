"""Helpers for parity tests against the PyTorch peers (diffusers, transformers)."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest


def require(module: str):
    """Imports a test-only peer; skips when it is absent locally, fails under CI where it must be installed."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def perturb_vectors(torch_module, seed: int = 0, scale: float = 0.1) -> None:
    """Adds noise to every 1-D parameter (norm scales/biases start at 1/0 and would hide a mapping bug)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in torch_module.parameters():
            if param.ndim == 1:
                param.add_(scale * torch.randn(param.shape, generator=gen))


def randomize_for_evaluation(torch_module, seed: int = 0):
    """Random batch-norm running statistics (mean ~ N(0, 0.1), variance in [0.5, 1.5]) and perturbed 1-D
    parameters, then eval mode: a network that runs on its stored statistics, with nothing left at a default
    that would hide a mapping bug. Returns the module."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in torch_module.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    perturb_vectors(torch_module, seed)
    return torch_module.eval()


def state_dict_numpy(torch_module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref||."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def nchw(x) -> np.ndarray:
    return np.array(np.asarray(x).transpose(0, 3, 1, 2))  # a writable copy, as torch.from_numpy wants


def nhwc(x) -> np.ndarray:
    return np.array(np.asarray(x).transpose(0, 2, 3, 1))
