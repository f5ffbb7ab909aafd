"""The evaluation protocols, all at Linf eps in pixel space [0, 1].

A randomized ensemble answers with member i with probability p_i (the manifest's
`sampling.probabilities`, 1/N when absent), so the quantity that matters is the expected accuracy,
sum over members of p_i 1[f_i(x') = y]. Every figure below is weighted so.

- weak (the public RED code's): PGD-10 where every step differentiates one randomly drawn member,
  success checked against another independent draw;
- on the loss averaged over members with the probabilities (EOT computed exactly): PGD-k with random
  start, APGD-CE and APGD-DLR (each twice, from two random starts), APGD-T (targeted DLR toward each
  of the 3 likeliest wrong classes) and APGD on the clamped member margin;
- APGD-CE against each member alone, scored on all members;
- ARC (arc.py) with g = 1 and g = 2 from the clean input, and g = 2 from the best point the attacks
  above found;
- per example, the worst of all of those ("adaptive"), and how much each attack moved it;
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

from redtrain.arc import arc
from redtrain.attacks import apgd, expected_accuracy, member_ce, pgd, pgd_worst, project
from redtrain.package import Target
from redtrain.results import ADAPTIVE

Member = Callable[[torch.Tensor], torch.Tensor]


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
    member_steps: int = 100
    arc_iterations: int = 20
    targets: int = 3


def _stacked(members: Sequence[Member]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.stack([m(x) for m in members])


def member_correct(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [M, B]: member i right on example b."""
    with torch.no_grad():
        return torch.stack([m(x).argmax(dim=1) == y for m in members])


def ensemble_correct(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor,
                     probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """The averaged ensemble (`--sampling mean`): softmax averaged with the probabilities."""
    with torch.no_grad():
        probs = torch.stack([F.softmax(m(x), dim=1) for m in members])
        w = (torch.full((len(members),), 1.0 / len(members)) if probabilities is None
             else probabilities.to(torch.float32))
        return (w[:, None, None] * probs).sum(dim=0).argmax(dim=1) == y


def gradient_cosine(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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


def _scored(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor,
            probabilities: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    return member_correct(members, x, y), ensemble_correct(members, x, y, probabilities)


def summarise(correct: torch.Tensor, ensemble: torch.Tensor, probabilities: torch.Tensor | None = None) -> dict:
    per_member = correct.float().mean(dim=1)
    return {"expected": float(expected_accuracy(correct, probabilities).mean()),
            "worstMember": float(per_member.min()),
            "perMember": [round(float(a), 4) for a in per_member], "ensemble": float(ensemble.float().mean())}


def _batches(x: torch.Tensor, y: torch.Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start:start + size], y[start:start + size]


def weak_protocol(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                  generator: torch.Generator, probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """PGD where each step's gradient comes from one freshly drawn member (what a naive attacker of the
    random model sees), success judged by another independent draw. Returns bool [B] correct."""
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator)
    x_adv = project(x + (2 * noise - 1) * eps, x, eps)
    uniform = probabilities is None or bool((probabilities == probabilities[0]).all())

    def draw() -> Member:
        if uniform:
            return members[int(torch.randint(len(members), (1,), generator=generator))]
        return members[int(torch.multinomial(probabilities.float(), 1, generator=generator))]

    for _ in range(steps):
        member = draw()
        z = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(member(z), y, reduction="sum"), z)
        x_adv = project(x_adv + (eps / 4) * grad.sign(), x, eps)
    judge = draw()
    with torch.no_grad():
        return judge(x_adv).argmax(dim=1) == y


def transfer_counts(members: Sequence[Member], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
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


def _lowest(members: Sequence[Member], probabilities: torch.Tensor, y: torch.Tensor,
            candidates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per example, the candidate input with the lowest expected accuracy (the first on ties)."""
    best = candidates[0].clone()
    best_acc = expected_accuracy(member_correct(members, best, y), probabilities)
    for c in candidates[1:]:
        acc = expected_accuracy(member_correct(members, c, y), probabilities)
        lower = acc < best_acc
        best[lower], best_acc = c[lower], torch.where(lower, acc, best_acc)
    return best


def targeted_apgd(members: Sequence[Member], probabilities: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  eps: float, steps: int, targets: int, generator: torch.Generator) -> torch.Tensor:
    """APGD-T: targeted DLR toward each of the `targets` likeliest wrong classes of the averaged
    ensemble at the clean input, one run per target class; the lowest expected accuracy per example."""
    with torch.no_grad():
        probs = (probabilities.float()[:, None, None] * torch.stack([F.softmax(m(x), dim=1) for m in members])).sum(0)
    probs.scatter_(1, y[:, None], float("-inf"))
    ranked = probs.topk(min(targets, probs.shape[1] - 1), dim=1).indices
    runs = [apgd(_stacked(members), x, y, eps, steps, "dlr-t", generator, weights=probabilities,
                 target=ranked[:, k]) for k in range(ranked.shape[1])]
    return _lowest(members, probabilities, y, runs)


def per_member_apgd(members: Sequence[Member], probabilities: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    eps: float, steps: int, generator: torch.Generator) -> torch.Tensor:
    """APGD-CE on each member alone, every iterate scored on all members (a perturbation that breaks
    one member may break others too); per example the lowest expected accuracy over the runs."""
    stacked = _stacked(members)
    runs = [apgd(_stacked([m]), x, y, eps, steps, "ce", generator, score=stacked, score_weights=probabilities)
            for i, m in enumerate(members) if probabilities[i] > 0]
    return _lowest(members, probabilities, y, runs)


def evaluate_target(target: Target, x: torch.Tensor, y: torch.Tensor, settings: Settings,
                    progress: bool = True) -> dict:
    members = target.members
    p = torch.tensor(target.probabilities, dtype=torch.float64)
    stacked = _stacked(members)
    generator = torch.Generator().manual_seed(settings.seed)
    eps, n_steps = settings.eps, settings.apgd_steps
    best_x = x.clone()  # per example, the input with the lowest expected accuracy found so far

    def apgd_all(loss: str) -> Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]:
        return lambda xb, yb, _: apgd(stacked, xb, yb, eps, n_steps, loss, generator, weights=p)

    def arc_from(g: int, start: bool) -> Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]:
        return lambda xb, yb, rows: arc(members, xb, yb, eps, p, g, settings.arc_iterations, generator,
                                        x_init=best_x[rows] if start else None)

    base = [f"PGD-{settings.pgd_steps}", f"APGD-CE-{n_steps}", f"APGD-DLR-{n_steps}"]
    attacks: dict[str, Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]] = {
        base[0]: lambda xb, yb, _: pgd_worst(stacked, xb, yb, eps, settings.pgd_steps,
                                             2.5 * eps / settings.pgd_steps, generator, weights=p),
        base[1]: apgd_all("ce"),
        base[2]: apgd_all("dlr"),
        f"APGD-CE-{n_steps} (2nd start)": apgd_all("ce"),
        f"APGD-DLR-{n_steps} (2nd start)": apgd_all("dlr"),
        f"APGD-T-{n_steps} (top {settings.targets})": lambda xb, yb, _: targeted_apgd(
            members, p, xb, yb, eps, n_steps, settings.targets, generator),
        f"APGD-{n_steps} clamped margin": apgd_all("margin"),
    }
    if len(members) > 1:
        attacks[f"APGD-CE-{settings.member_steps} per member"] = lambda xb, yb, _: per_member_apgd(
            members, p, xb, yb, eps, settings.member_steps, generator)
    arc_name = f"ARC-{settings.arc_iterations}"
    attacks[f"{arc_name} g=1"] = arc_from(1, False)
    attacks[f"{arc_name} g=2"] = arc_from(2, False)
    attacks[f"{arc_name} g=2 from the worst point"] = arc_from(2, True)  # last: starts where the others got

    curve_eps = [e for e in settings.curve_eps if abs(e - eps) > 1e-12]
    stages = ["clean", "weak", *attacks, *[f"curve {e:g}" for e in curve_eps]]
    if len(members) > 1:
        stages.append("transfer")
    bar = tqdm(total=len(stages) * -(-x.shape[0] // settings.batch_size), desc=target.name, disable=not progress,
               file=sys.stderr)

    def over_batches(stage: str, fn: Callable[..., object]) -> list:
        out = []
        for start in range(0, x.shape[0], settings.batch_size):
            rows = slice(start, start + settings.batch_size)
            bar.set_postfix_str(stage)
            out.append(fn(x[rows], y[rows], rows))
            bar.update(1)
        return out

    result: dict = {"name": target.name, "spec": target.spec, "members": len(members),
                    "probabilities": [round(v, 6) for v in target.probabilities]}
    clean = over_batches("clean", lambda xb, yb, _: _scored(members, xb, yb, p))
    result["clean"] = summarise(torch.cat([c for c, _ in clean], dim=1), torch.cat([e for _, e in clean]), p)
    if len(members) > 1:
        cosine = torch.cat([gradient_cosine(members, x[i:i + settings.batch_size], y[i:i + settings.batch_size])
                            for i in range(0, x.shape[0], settings.batch_size)])
        result["clean"]["gradientCosine"] = round(float(cosine.mean()), 4)

    weak = over_batches("weak", lambda xb, yb, _: weak_protocol(members, xb, yb, eps, settings.weak_steps,
                                                                generator, p))
    result["weak"] = {"name": f"PGD-{settings.weak_steps}, one random member per step, judged by another draw",
                      "accuracy": float(torch.cat(weak).float().mean())}

    per_attack, per_image, right_at = {}, {}, {}
    best_acc = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
    for name, attack in attacks.items():
        def run(xb: torch.Tensor, yb: torch.Tensor, rows: slice, attack=attack):
            x_adv = attack(xb, yb, rows)
            correct, ens = _scored(members, x_adv, yb, p)
            acc = expected_accuracy(correct, p)
            lower = acc < best_acc[rows]
            best_x[rows][lower] = x_adv[lower]
            best_acc[rows] = torch.where(lower, acc, best_acc[rows])
            return correct, ens
        outs = over_batches(name, run)
        correct = torch.cat([c for c, _ in outs], dim=1)
        per_attack[name] = summarise(correct, torch.cat([e for _, e in outs]), p)
        per_image[name] = expected_accuracy(correct, p)
        right_at[name] = correct.sum(dim=0)

    names = list(attacks)
    table = torch.stack([per_image[k] for k in names])  # [attacks, B]
    worst, which = table.min(dim=0)
    counts = torch.stack([right_at[k] for k in names]).gather(0, which[None]).squeeze(0)
    # Per example, how many members the worst attack left correct (and the weighted figure): paired
    # comparisons between two evaluations on the same examples (paired.py) need it, not only the mean.
    per_attack[ADAPTIVE] = {"expected": float(worst.mean()), "correctMembers": [int(c) for c in counts],
                            "accuracyPerImage": [round(float(a), 6) for a in worst]}
    result["attacks"] = per_attack
    # What each attack adds: the worst case without it, minus the worst case (0 when others find as much).
    moved = {}
    for i, k in enumerate(names):
        rest = torch.cat([table[:i], table[i + 1:]]).min(dim=0).values
        moved[k] = round(float(rest.mean() - worst.mean()), 6)
    result["worstCase"] = {"base": float(table[: len(base)].min(dim=0).values.mean()), "baseAttacks": base,
                           "withoutEach": moved,
                           "firstAt": {k: int((which == i).sum()) for i, k in enumerate(names)}}

    curve = {}
    for e in settings.curve_eps:
        if abs(e - eps) <= 1e-12:
            curve[f"{e:g}"] = per_attack[f"APGD-CE-{n_steps}"]["expected"]
            continue
        outs = over_batches(f"curve {e:g}", lambda xb, yb, _: member_correct(
            members, apgd(stacked, xb, yb, e, settings.curve_steps, "ce", generator, weights=p), yb))
        curve[f"{e:g}"] = float(expected_accuracy(torch.cat(outs, dim=1), p).mean())
    result["curve"] = curve
    result["curveAttack"] = (f"APGD-CE-{settings.curve_steps} (APGD-CE-{n_steps} at eps {eps:g})")

    if len(members) > 1:
        counts_t = over_batches("transfer", lambda xb, yb, _: transfer_counts(members, xb, yb, eps,
                                                                              settings.transfer_steps, generator))
        result["transfer"] = transfer_matrix(sum(f for f, _ in counts_t), sum(c for _, c in counts_t))
    bar.close()
    return result
