"""Linf attacks in pixel space [0, 1]: PGD (Madry et al. 2018) for training, APGD (CE, DLR, targeted DLR,
clamped margin) for evaluation. ARC, the attack made for randomized ensembles, is in arc.py."""

from __future__ import annotations

import math
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


# --- Evaluation attacks: APGD (Croce & Hein 2020) on a loss averaged over members -------------------

def true_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example z_y - max_{i != y} z_i: positive while the true class wins."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return z_y - others.max(dim=1).values


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss, per example: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3).

    Scale-invariant in the logits, so a member cannot hide behind large or small logits.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"DLR needs at least 3 classes, got {logits.shape[1]}")
    ordered, _ = logits.sort(dim=1, descending=True)
    return -true_margin(logits, y) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), scaled by the budget and rounded up."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if q <= 1.0})


CLAMP_KAPPA = 0.1  # logits; where the clamped margin stops pushing a fooled member

StackedLogits = Callable[[torch.Tensor], torch.Tensor]  # x -> logits of every member [M, B, C]


class WorstCase:
    """Per example, the perturbed input with the lowest expected accuracy: the members right on it,
    weighted by their sampling probabilities (uniform without `weights`); ties: the highest loss."""

    def __init__(self, x: torch.Tensor, members: int, weights: Optional[torch.Tensor] = None) -> None:
        self.x = x.clone()
        self.weights = (torch.full((members,), 1.0 / members, dtype=torch.float64) if weights is None
                        else weights.detach().to("cpu", torch.float64))
        self.accuracy = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
        self.correct = torch.full((x.shape[0],), members + 1, dtype=torch.long)
        self.loss = torch.full((x.shape[0],), float("-inf"))

    def update(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        right = (logits.argmax(dim=2) == y[None]).cpu()
        accuracy = expected_accuracy(right, self.weights)
        loss = loss.detach().cpu()
        better = (accuracy < self.accuracy) | ((accuracy == self.accuracy) & (loss > self.loss))
        self.x[better] = x.detach()[better.to(x.device)].to(self.x.device)
        self.accuracy = torch.where(better, accuracy, self.accuracy)
        self.correct = torch.where(better, right.sum(dim=0), self.correct)
        self.loss = torch.where(better, loss, self.loss)


def expected_accuracy(right: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float64 [B]: sum_i p_i 1[member i right], from bool `right` [M, B] and probabilities p [M]
    (uniform when None). Summed in float64 so that ties between inputs stay exact ties."""
    members = right.shape[0]
    w = (torch.full((members,), 1.0 / members, dtype=torch.float64) if weights is None
         else weights.to(torch.float64))
    return (w.to(right.device)[:, None] * right.to(torch.float64)).sum(dim=0)


def clamped_margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = CLAMP_KAPPA) -> torch.Tensor:
    """Per example: -max(z_y - max_{i != y} z_i, -kappa). Maximising it pushes a member just past its
    decision boundary and then stops (zero gradient), so effort goes to the members still right."""
    return -true_margin(logits, y).clamp(min=-kappa)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020), per example: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    if logits.shape[1] < 4:
        raise ValueError(f"targeted DLR needs at least 4 classes, got {logits.shape[1]}")
    ordered, _ = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def _mean_member_loss(kind: str, weights: Optional[torch.Tensor] = None,
                      target: Optional[torch.Tensor] = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss over members, weighted by their sampling probabilities (the mean when None)."""
    per_member = {"ce": lambda z, y: F.cross_entropy(z, y, reduction="none"), "dlr": dlr_loss,
                  "margin": clamped_margin_loss, "dlr-t": lambda z, y: targeted_dlr_loss(z, y, target)}[kind]
    if kind == "dlr-t" and target is None:
        raise ValueError("the targeted DLR loss needs a target class per example")
    if weights is None:
        return lambda logits, y: torch.stack([per_member(z, y) for z in logits]).mean(dim=0)
    return lambda logits, y: (weights.to(logits.device, logits.dtype)[:, None]
                              * torch.stack([per_member(z, y) for z in logits])).sum(dim=0)


def apgd(stacked: StackedLogits, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
         loss: str = "ce", generator: Optional[torch.Generator] = None, rho: float = 0.75,
         momentum: float = 0.75, weights: Optional[torch.Tensor] = None, target: Optional[torch.Tensor] = None,
         score: Optional[StackedLogits] = None, score_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Linf APGD maximising a loss over members: `ce`, `dlr`, `margin` (clamped_margin_loss) or
    `dlr-t` (targeted_dlr_loss toward `target`), averaged with the sampling probabilities `weights`
    (uniform when None: the exact expectation over the draw, i.e. EOT with no sampling noise).
    Returns, per example, the iterate with the lowest expected accuracy; that is judged on the
    members `score` computes (weighted by `score_weights`) when given, e.g. every member of the
    ensemble while only one is attacked, and on the attacked members otherwise."""
    loss_fn = _mean_member_loss(loss, weights, target)
    if score is None:
        score_weights = weights
    x = x.detach()
    n = x.shape[0]
    checkpoints = set(apgd_checkpoints(steps)[1:])

    def value_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z.clone().requires_grad_(True)
        logits = stacked(z)
        values = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), z)
        if score is not None:
            with torch.no_grad():
                logits = score(z)
        return values.detach(), grad.detach(), logits.detach()

    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    x_k = project(x + (2 * noise - 1) * eps, x, eps)
    f_k, g_k, logits = value_and_grad(x_k)
    worst = WorstCase(x, logits.shape[0], score_weights)
    worst.update(x_k, logits, y, f_k)
    step = torch.full((n, 1, 1, 1), 2.0 * eps, device=x.device)
    x_best, f_best, g_best = x_k.clone(), f_k.clone(), g_k.clone()
    x_prev = x_k.clone()
    increases = torch.zeros(n, device=x.device)
    f_best_at_checkpoint = f_best.clone()
    step_reduced_at_checkpoint = torch.ones(n, dtype=torch.bool, device=x.device)
    last_checkpoint = 0

    for k in range(steps):
        z = project(x_k + step * g_k.sign(), x, eps)
        if k == 0:
            x_next = z
        else:
            x_next = project(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_prev), x, eps)
        f_next, g_next, logits = value_and_grad(x_next)
        worst.update(x_next, logits, y, f_next)
        increases += (f_next > f_k).float()
        improved = f_next > f_best
        x_best[improved], f_best[improved], g_best[improved] = x_next[improved], f_next[improved], g_next[improved]
        x_prev, x_k, f_k, g_k = x_k, x_next, f_next, g_next

        if k + 1 in checkpoints:
            window = k + 1 - last_checkpoint
            few_increases = increases < rho * window
            stalled = (~step_reduced_at_checkpoint) & (f_best_at_checkpoint >= f_best)
            halve = few_increases | stalled
            step[halve] /= 2.0
            # Restart the halved examples from their best point so far.
            x_k[halve], f_k[halve], g_k[halve] = x_best[halve], f_best[halve], g_best[halve]
            step_reduced_at_checkpoint = halve
            f_best_at_checkpoint = f_best.clone()
            increases.zero_()
            last_checkpoint = k + 1
    return worst.x.to(x.device)


def pgd_worst(stacked: StackedLogits, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
              step_size: float, generator: Optional[torch.Generator] = None,
              weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PGD with random start on the member-averaged CE (weighted by `weights`); keeps the worst
    iterate per example."""
    loss_fn = _mean_member_loss("ce", weights)
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    x_adv = project(x + (2 * noise - 1) * eps, x, eps)
    worst = None
    for _ in range(steps + 1):
        z = x_adv.clone().requires_grad_(True)
        logits = stacked(z)
        values = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), z)
        if worst is None:
            worst = WorstCase(x, logits.shape[0], weights)
        worst.update(x_adv, logits.detach(), y, values.detach())
        x_adv = project(x_adv + step_size * grad.sign(), x, eps)
    return worst.x.to(x.device)
