"""The training objective of each method, split into named terms: one member after another
(`loss_terms`, the reference) or all members at once (`step_terms` dispatches to
`stacked.loss_terms_stacked` where the config allows it; the two agree, see tests/test_stacked.py)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from redtrain.attacks import ensemble_ce, member_ce, pgd, project
from redtrain.config import AttackConfig, Config
from redtrain.losses import distill_loss, gradient_similarity, input_gradients, lipschitz_penalty
from redtrain.stacked import loss_terms_stacked, stacked_logits

Member = Callable[[torch.Tensor], torch.Tensor]


def _step_size(attack: AttackConfig) -> float:
    return attack.eps * attack.step_ratio


def _attack_members(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                    generator: torch.Generator) -> list[torch.Tensor]:
    return [pgd(member_ce(m), x, y, attack.eps, _step_size(attack), attack.steps, attack.random_start, generator)
            for m in members]


def trades_point(member: Member, x: torch.Tensor, attack: AttackConfig, generator: torch.Generator) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on KL(f(x) || f(x')) from a start 0.001-close to x (a random
    start on the KL alone has zero gradient at x' = x)."""
    with torch.no_grad():
        clean = F.softmax(member(x), dim=1)
    x = x.detach()
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    point = project(x + 0.001 * noise, x, attack.eps)
    for _ in range(attack.steps):
        point.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(member(point), dim=1), clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, point)
        point = project(point.detach() + _step_size(attack) * grad.sign(), x, attack.eps)
    return point.detach()


def trades_terms(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, cfg: Config,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """sum_i CE(f_i(x), y) + beta * KL(f_i(x) || f_i(x_i')), x_i' from `trades_point` on member i."""
    adv = cfg.adversarial
    ce_total, kl_total = x.new_zeros(()), x.new_zeros(())
    for member in members:
        point = trades_point(member, x, adv.attack, generator)
        logits = member(x)
        ce_total = ce_total + F.cross_entropy(logits, y)
        kl_total = kl_total + F.kl_div(F.log_softmax(member(point), dim=1), F.softmax(logits, dim=1),
                                       reduction="batchmean")
    return {"ce": ce_total, "kl": kl_total, "loss": ce_total + adv.trades_beta * kl_total}


def loss_terms(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, cfg: Config,
               generator: torch.Generator, teacher: Sequence[Member] | None = None) -> dict[str, torch.Tensor]:
    """The training objective of cfg.method, split into named terms; terms['loss'] is what to minimise.

    independent     sum_i CE(f_i(x))
    independent-at  sum_i (1-mix) CE(f_i(x)) + mix CE(f_i(x_i^adv)), x_i^adv = PGD on member i
                    (adversarial.loss trades: `trades_terms`)
    red / ps-red    CE part as above (or clean CE without adversarial training)
                    (with a teacher, each clean CE is (1-w) CE + w T^2 KL(teacher_i_T || f_i_T))
                    + l_sim * L_sim  (gradients at the points the CE is taken at)
                    + l_lip * L_lip  (on [clean half; PGD-against-the-averaged-ensemble half])
    """
    adv = cfg.adversarial
    if adv.enabled and adv.loss == "trades":
        return trades_terms(members, x, y, cfg, generator)
    terms: dict[str, torch.Tensor] = {}
    x_adv = _attack_members(members, x, y, adv.attack, generator) if adv.enabled else None

    ce_total = x.new_zeros(())
    grads: list[torch.Tensor] = []
    distill = cfg.loss.distill
    if teacher is not None:
        with torch.no_grad():
            teacher_logits = [t(x) for t in teacher]

    def clean_ce(i: int, member: Member) -> torch.Tensor:
        logits = member(x)
        ce = F.cross_entropy(logits, y)
        if teacher is None:
            return ce
        return (1 - distill.weight) * ce + distill.weight * distill_loss(logits, teacher_logits[i], distill.temperature)

    want_sim = cfg.method in ("red", "ps-red") and cfg.loss.l_sim > 0
    for i, member in enumerate(members):
        point = x_adv[i] if x_adv is not None else x
        if want_sim:
            ce_point, g = input_gradients(member, point, y)
            grads.append(g)
            if x_adv is None and teacher is not None:
                ce_point = clean_ce(i, member)
        elif x_adv is None:
            ce_point = clean_ce(i, member)
        else:
            ce_point = F.cross_entropy(member(point), y)
        if x_adv is not None and adv.mix < 1.0:
            ce_point = (1 - adv.mix) * clean_ce(i, member) + adv.mix * ce_point
        ce_total = ce_total + ce_point
    terms["ce"] = ce_total
    loss = ce_total

    if want_sim:
        terms["sim"] = gradient_similarity(grads)
        loss = loss + cfg.loss.l_sim * terms["sim"]
    if cfg.method in ("red", "ps-red") and cfg.loss.l_lip > 0:
        half = x.shape[0] // 2
        lip = cfg.loss.lip_attack
        x_far = pgd(ensemble_ce(members), x[half:], y[half:], lip.eps, _step_size(lip), lip.steps,
                    lip.random_start, generator)
        x_lip = torch.cat([x[:half], x_far])
        lip_grads = [input_gradients(m, x_lip, y)[1] for m in members]
        terms["lip"] = lipschitz_penalty(lip_grads)
        loss = loss + cfg.loss.l_lip * terms["lip"]
    terms["loss"] = loss
    return terms


def step_terms(ensemble: nn.Module, members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, cfg: Config,
               generator: torch.Generator, teacher: Sequence[Member] | None = None) -> dict[str, torch.Tensor]:
    """One step's loss terms, vectorised over members where the config allows it (cfg.stacked)."""
    if not cfg.stacked:
        return loss_terms(members, x, y, cfg, generator, teacher)
    params = ensemble.stacked_params()
    teacher_logits = None
    if teacher is not None:
        with torch.no_grad():
            teacher_logits = torch.stack([t(x) for t in teacher])
    return loss_terms_stacked(lambda z: stacked_logits(params, z), len(members), x, y, cfg, generator, teacher_logits)
