"""Learning-rate schedule and optimizer parameter groups (open_clip's conventions)."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at step ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, norms and the temperature get no weight decay, as in open_clip."""
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "logit_scale" in name)


def adamw(model: nn.Module, lr: float, wd: float, betas: tuple[float, float], eps: float
          ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, decay applied only where it belongs."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("no parameter is trainable")
    groups = [
        {"params": [p for n, p in named if no_weight_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not no_weight_decay(n, p)], "weight_decay": wd},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)
