"""Linf PGD in pixel space [0, 1] (Madry et al. 2018), against one member or the averaged ensemble."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from redtrain.losses import ensemble_log_probs

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> per-example loss [B]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip into the Linf ball of radius eps around x and into the pixel range [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def pgd(loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
        random_start: bool = True, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Maximise loss_fn by signed-gradient ascent; returns detached adversarial inputs."""
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = project(x + (2 * noise - 1) * eps, x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x_adv, y).sum(), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def member_ce(member: Callable[[torch.Tensor], torch.Tensor]) -> LossFn:
    return lambda x, y: F.cross_entropy(member(x), y, reduction="none")


def ensemble_ce(members: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> LossFn:
    """CE of the averaged ensemble, log(mean softmax): what RED's L_lip batch is attacked with."""
    return lambda x, y: F.nll_loss(ensemble_log_probs([m(x) for m in members]), y, reduction="none")
