"""ARC (Dbouk & Shanbhag, "Adversarial Vulnerability of Randomized Ensembles", ICML 2022), Linf.

Attacks on the expected loss over members can overstate a randomized ensemble: the loss gradient of
an average can point nowhere useful when members disagree. ARC instead visits the members one at a
time, in an order drawn with the sampling probabilities, and moves the input toward the nearest
decision boundary of the member it visits: among the top-g classes other than the true one, the
boundary whose linearised distance |z_y - z_j| / ||grad(z_j - z_y)||_1 is smallest. The step goes
along sign(grad(z_j - z_y)), long enough to reach that boundary under the linearisation but at most
the current step size, and is projected into the eps ball and the pixel box. A step is kept only if
the expected accuracy over all members (weighted by the probabilities) does not rise, so members the
input already fools stay fooled unless a better trade is found. The step size starts at eps and
shrinks linearly over the iterations.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from redtrain.attacks import StackedLogits, expected_accuracy, project

Member = StackedLogits  # x -> logits [B, C] of one member

OVERSHOOT = 1.02  # past the linearised boundary, so that a linear member really flips


def _draw_order(probabilities: torch.Tensor, generator: Optional[torch.Generator]) -> list[int]:
    """Every member with a non-zero probability once, drawn without replacement by probability."""
    live = torch.nonzero(probabilities > 0).flatten()
    picked = torch.multinomial(probabilities[live].to(torch.float64), live.numel(), replacement=False,
                               generator=generator)
    return [int(live[i]) for i in picked]


def _boundary_step(member: Member, x_adv: torch.Tensor, y: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(direction [B, ...] in {-1, 0, 1}, linearised Linf distance [B]) to the nearest of the member's
    top-g non-true decision boundaries. Examples the member already gets wrong get direction 0."""
    z = x_adv.clone().requires_grad_(True)
    logits = member(z)
    others = logits.detach().clone()
    others.scatter_(1, y[:, None], float("-inf"))
    candidates = others.topk(min(g, logits.shape[1] - 1), dim=1).indices  # [B, g]
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    best_dist = torch.full((x_adv.shape[0],), float("inf"), device=x_adv.device)
    best_dir = torch.zeros_like(x_adv)
    for k in range(candidates.shape[1]):
        diff = logits.gather(1, candidates[:, k:k + 1]).squeeze(1) - z_y  # < 0 while the member is right
        (grad,) = torch.autograd.grad(diff.sum(), z, retain_graph=k + 1 < candidates.shape[1])
        dist = (-diff.detach()) / grad.flatten(1).abs().sum(dim=1).clamp(min=1e-12)
        closer = dist < best_dist
        best_dist = torch.where(closer, dist, best_dist)
        best_dir[closer] = grad.sign()[closer]
    right = logits.detach().argmax(dim=1) == y
    best_dir[~right] = 0.0
    return best_dir, best_dist


def arc(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, eps: float, probabilities: torch.Tensor,
        g: int = 1, iterations: int = 20, generator: Optional[torch.Generator] = None,
        x_init: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Linf ARC; returns detached inputs whose expected accuracy is never above that of the start
    (`x_init`, e.g. the best point other attacks found, or the clean input)."""
    x = x.detach()
    x_adv = (x.clone() if x_init is None else project(x_init.detach().clone(), x, eps))
    probabilities = probabilities.detach().to("cpu", torch.float64)

    def accuracy(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            right = torch.stack([m(z).argmax(dim=1) == y for m in members])
        return expected_accuracy(right.cpu(), probabilities)

    current = accuracy(x_adv)
    for t in range(iterations):
        step_size = eps * (iterations - t) / iterations
        for i in _draw_order(probabilities, generator):
            direction, distance = _boundary_step(members[i], x_adv, y, g)
            length = torch.clamp(OVERSHOOT * distance, max=step_size)
            length = torch.where(torch.isfinite(length), length, torch.zeros_like(length))
            candidate = project(x_adv + length.view(-1, *[1] * (x.dim() - 1)) * direction, x, eps)
            value = accuracy(candidate)
            keep = value <= current
            x_adv[keep.to(x.device)] = candidate[keep.to(x.device)]
            current = torch.where(keep, value, current)
    return x_adv.detach()
