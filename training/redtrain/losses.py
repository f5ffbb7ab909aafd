"""RED loss terms as pure functions of tensors (no module state, no config objects).

Notation: a member f_i maps pixels x in [0, 1] to logits. g_i(x) is the input gradient of the
per-example cross-entropy CE(f_i(x), y), one row per example. The gradients are built with
create_graph=True so that penalties on them train the weights (double backprop).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Member = Callable[[torch.Tensor], torch.Tensor]


def ensemble_log_probs(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Log of the mean of the members' softmax: the averaged ensemble's prediction."""
    stacked = torch.stack([F.log_softmax(z, dim=1) for z in logits])
    return torch.logsumexp(stacked, dim=0) - math.log(len(logits))


def input_gradients(member: Member, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mean CE, per-example input gradients [B, D]) with the graph kept for double backprop.

    The gradient is taken of the summed CE, so row b is exactly d CE(f(x_b), y_b) / d x_b, free of
    the 1/B factor a batch mean would put on it.
    """
    x = x.detach().requires_grad_(True)
    per_example = F.cross_entropy(member(x), y, reduction="none")
    (grad,) = torch.autograd.grad(per_example.sum(), x, create_graph=True)
    return per_example.mean(), grad.flatten(1)


def gradient_similarity(grads: Sequence[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """L_sim: mean over member pairs i<j of the batch mean of |cos(g_i, g_j)|. In [0, 1]."""
    if len(grads) < 2:
        raise ValueError("gradient_similarity needs at least two members")
    pairs = [
        F.cosine_similarity(a, b, dim=1, eps=eps).abs().mean()
        for a, b in itertools.combinations(grads, 2)
    ]
    return torch.stack(pairs).mean()


def lipschitz_penalty(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_lip: mean over members of the batch mean of 2 * ||g_i||_2^2 (a squared input-gradient penalty)."""
    return torch.stack([2.0 * g.pow(2).sum(dim=1).mean() for g in grads]).mean()


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean (Hinton et al., 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t
