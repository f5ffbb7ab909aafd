"""The evaluation protocols, all at Linf eps in pixel space [0, 1].

A randomized ensemble answers with member i with probability 1/N, so the quantity that matters is
the expected accuracy, mean over members of 1[f_i(x') = y]; the adaptive attacks maximise the loss
averaged over all N members, which is EOT computed exactly.

- weak (the public RED code's): PGD-10 where every step differentiates one randomly drawn member,
  success checked against another independent draw;
- PGD-k with random start on the member-averaged CE;
- APGD-CE and APGD-DLR on the member-averaged loss;
- per example, the worst of those three ("adaptive");
- member-to-member transfer: PGD on member i alone, how often it fools member j;
- APGD-CE expected accuracy against eps.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from redtrain.attacks import apgd, member_ce, pgd, pgd_worst, project
from redtrain.onnx_torch import OnnxMember
from redtrain.package import Target


@dataclass(frozen=True)
class Settings:
    eps: float = 0.1
    limit: int | None = None
    apgd_steps: int = 100
    pgd_steps: int = 50
    weak_steps: int = 10
    transfer_steps: int = 20
    curve_eps: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
    curve_steps: int = 50
    batch_size: int = 500
    seed: int = 0
    data_root: str | None = None


def _stacked(members: Sequence[OnnxMember]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.stack([m(x) for m in members])


def member_correct(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [M, B]: member i right on example b."""
    with torch.no_grad():
        return torch.stack([m(x).argmax(dim=1) == y for m in members])


def ensemble_correct(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        probs = torch.stack([F.softmax(m(x), dim=1) for m in members]).mean(dim=0)
        return probs.argmax(dim=1) == y


def gradient_cosine(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B]: per example, the mean over member pairs of |cos| between the members' input gradients of
    their CE; the batch mean is L_sim (losses.gradient_similarity) at clean points. 1 means the members
    share one gradient direction (alike to a first-order attacker), 0 means orthogonal gradients."""
    grads = []
    for m in members:
        z = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(m(z), y, reduction="sum"), z)  # no graph kept: not trained
        grads.append(g.flatten(1))
    pairs = [F.cosine_similarity(a, b, dim=1, eps=1e-12).abs() for a, b in itertools.combinations(grads, 2)]
    return torch.stack(pairs).mean(dim=0)


def _scored(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return member_correct(members, x, y), ensemble_correct(members, x, y)


def summarise(correct: torch.Tensor, ensemble: torch.Tensor) -> dict:
    per_member = correct.float().mean(dim=1)
    return {"expected": float(correct.float().mean()), "worstMember": float(per_member.min()),
            "perMember": [round(float(a), 4) for a in per_member], "ensemble": float(ensemble.float().mean())}


def _batches(x: torch.Tensor, y: torch.Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start:start + size], y[start:start + size]


def weak_protocol(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                  generator: torch.Generator) -> torch.Tensor:
    """PGD where each step's gradient comes from one freshly drawn member (what a naive attacker of the
    random model sees), success judged by another independent draw. Returns bool [B] correct."""
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator)
    x_adv = project(x + (2 * noise - 1) * eps, x, eps)
    for _ in range(steps):
        member = members[int(torch.randint(len(members), (1,), generator=generator))]
        z = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(member(z), y, reduction="sum"), z)
        x_adv = project(x_adv + (eps / 4) * grad.sign(), x, eps)
    judge = members[int(torch.randint(len(members), (1,), generator=generator))]
    with torch.no_grad():
        return judge(x_adv).argmax(dim=1) == y


def transfer_counts(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled [M, M], clean [M]): fooled[i][j] counts the examples member j gets right clean and
    wrong after PGD made on member i alone; clean[j] counts the examples member j gets right."""
    clean = member_correct(members, x, y)
    fooled = torch.zeros(len(members), len(members))
    for i, source in enumerate(members):
        x_adv = pgd(member_ce(source), x, y, eps, 2.5 * eps / steps, steps, generator=generator)
        fooled[i] = (clean & ~member_correct(members, x_adv, y)).sum(dim=1).float()
    return fooled, clean.sum(dim=1).float()


def transfer_matrix(fooled: torch.Tensor, clean: torch.Tensor) -> list[list[float]]:
    """[i][j]: of the examples member j gets right clean, the fraction that PGD made on member i alone
    makes j get wrong. The diagonal is the white-box success rate on each member."""
    return [[round(float(v), 4) for v in row] for row in fooled / clean.clamp(min=1)[None, :]]


def evaluate_target(target: Target, x: torch.Tensor, y: torch.Tensor, settings: Settings,
                    progress: bool = True) -> dict:
    members = target.members
    stacked = _stacked(members)
    generator = torch.Generator().manual_seed(settings.seed)
    eps = settings.eps
    attacks = {
        f"PGD-{settings.pgd_steps}": lambda xb, yb: pgd_worst(stacked, xb, yb, eps, settings.pgd_steps,
                                                                2.5 * eps / settings.pgd_steps, generator),
        f"APGD-CE-{settings.apgd_steps}": lambda xb, yb: apgd(stacked, xb, yb, eps, settings.apgd_steps, "ce",
                                                              generator),
        f"APGD-DLR-{settings.apgd_steps}": lambda xb, yb: apgd(stacked, xb, yb, eps, settings.apgd_steps, "dlr",
                                                               generator),
    }
    curve_eps = [e for e in settings.curve_eps if abs(e - eps) > 1e-12]
    stages = ["clean", "weak", *attacks, *[f"curve {e:g}" for e in curve_eps]]
    if len(members) > 1:
        stages.append("transfer")
    bar = tqdm(total=len(stages) * -(-x.shape[0] // settings.batch_size), desc=target.name, disable=not progress,
               file=sys.stderr)

    def over_batches(stage: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list:
        out = []
        for xb, yb in _batches(x, y, settings.batch_size):
            bar.set_postfix_str(stage)
            out.append(fn(xb, yb))
            bar.update(1)
        return out

    result: dict = {"name": target.name, "spec": target.spec, "members": len(members)}
    clean = over_batches("clean", lambda xb, yb: _scored(members, xb, yb))
    result["clean"] = summarise(torch.cat([c for c, _ in clean], dim=1), torch.cat([e for _, e in clean]))
    if len(members) > 1:
        cosine = torch.cat([gradient_cosine(members, xb, yb) for xb, yb in _batches(x, y, settings.batch_size)])
        result["clean"]["gradientCosine"] = round(float(cosine.mean()), 4)

    weak = over_batches("weak", lambda xb, yb: weak_protocol(members, xb, yb, eps, settings.weak_steps, generator))
    result["weak"] = {"name": f"PGD-{settings.weak_steps}, one random member per step, judged by another draw",
                      "accuracy": float(torch.cat(weak).float().mean())}

    per_attack, worst_count = {}, None
    for name, attack in attacks.items():
        outs = over_batches(name, lambda xb, yb: _scored(members, attack(xb, yb), yb))
        correct = torch.cat([c for c, _ in outs], dim=1)
        per_attack[name] = summarise(correct, torch.cat([e for _, e in outs]))
        count = correct.sum(dim=0)
        worst_count = count if worst_count is None else torch.minimum(worst_count, count)
    # Per example, how many members the worst attack left correct: paired comparisons between two
    # evaluations on the same examples (training/tools/paired.py) need it, the mean alone is not enough.
    per_attack["adaptive (worst of the above, per example)"] = {
        "expected": float(worst_count.float().mean() / len(members)),
        "correctMembers": [int(c) for c in worst_count]}
    result["attacks"] = per_attack

    curve = {}
    for e in settings.curve_eps:
        if abs(e - eps) <= 1e-12:
            curve[f"{e:g}"] = per_attack[f"APGD-CE-{settings.apgd_steps}"]["expected"]
            continue
        outs = over_batches(f"curve {e:g}", lambda xb, yb: member_correct(
            members, apgd(stacked, xb, yb, e, settings.curve_steps, "ce", generator), yb))
        curve[f"{e:g}"] = float(torch.cat(outs, dim=1).float().mean())
    result["curve"] = curve
    result["curveAttack"] = (f"APGD-CE-{settings.curve_steps} (APGD-CE-{settings.apgd_steps} at eps {eps:g})")

    if len(members) > 1:
        counts = over_batches("transfer", lambda xb, yb: transfer_counts(members, xb, yb, eps,
                                                                         settings.transfer_steps, generator))
        result["transfer"] = transfer_matrix(sum(f for f, _ in counts), sum(c for _, c in counts))
    bar.close()
    return result
