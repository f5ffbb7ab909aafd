"""BARRE-style boosting of a randomized ensemble (Dbouk and Shanbhag, ICML 2023), method "barre".

A randomized ensemble beats its members only where no single perturbation breaks every member it
may draw. Boosting builds members that fail in different places:

  1. member 0 is a finished adversarially trained run (`boost.start`);
  2. member k starts as a copy of member k-1 and trains on adversarial examples of the current
     mixture, members 0..k with the new one included (PGD on the mixture's expected CE), with
     CE + boost.margin_weight * margin CE, the CE of the true class against the strongest other class
     only, softplus(max_{j != y} z_j - z_y), which keeps pushing examples the member gets barely right;
  3. the sampling probabilities are fitted on the simplex against ARC: each round attacks the held-out
     images with ARC under the current probabilities, measures each member's error there, takes a
     projected gradient step on the expected error, and the probabilities with the lowest attacked
     expected error are kept (the attack follows the probabilities, so each round re-attacks).

The held-out images are the last `adversarial.check.examples` of the test set, disjoint from the
first images that `redtrain evaluate` scores. The run folder takes the same checkpoint format as
`train` (so `export` and `load_run` read it) plus `probabilities`, which export writes to the
manifest's `sampling.probabilities`. Resuming continues after the last finished member.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from redtrain.arc import arc
from redtrain.attacks import expected_accuracy, pgd, true_margin
from redtrain.config import Config
from redtrain.data import Dataset, load_dataset, to_unit
from redtrain.ensemble import accuracy
from redtrain.errors import UserError
from redtrain.provenance import git_commit, write_text_atomic
from redtrain.runs import load_run, save_atomic, seed_everything


def margin_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example softplus(max_{j != y} z_j - z_y): cross-entropy over the true and the strongest
    other class alone."""
    return F.softplus(-true_margin(logits, y))


def mixture_ce(members: list[nn.Module]):
    """Loss for PGD against the uniform mixture of `members`: their mean per-example CE."""
    return lambda x, y: torch.stack([F.cross_entropy(m(x), y, reduction="none") for m in members]).mean(0)


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {p >= 0, sum p = 1} (sort-based, Duchi et al. 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    theta = css[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0)


def fit_probabilities(members: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, rounds: int,
                      step: float, iterations: int, generator: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
    """Probabilities on the simplex with the lowest expected accuracy loss under ARC (see the module
    docstring); returns them and one record per round."""
    p = torch.full((len(members),), 1.0 / len(members), dtype=torch.float64)
    best, best_acc, log = p.clone(), -1.0, []
    for r in range(rounds):
        x_adv = arc(members, x, y, eps, p, g=1, iterations=iterations, generator=generator)
        with torch.no_grad():
            right = torch.stack([m(x_adv).argmax(1) == y for m in members])
        acc = float(expected_accuracy(right, p).mean())
        errors = 1.0 - right.double().mean(1)
        log.append({"round": r, "probabilities": [round(float(v), 6) for v in p], "arcExpectedAccuracy": round(acc, 6),
                    "memberErrors": [round(float(e), 6) for e in errors]})
        if acc > best_acc:
            best, best_acc = p.clone(), acc
        p = project_simplex(p - step * errors)
    return best, log


def _state(cfg: Config, nets: list[nn.Module], classes: int, seconds: float, history: list, commit: str,
           probabilities: torch.Tensor | None) -> dict:
    ensemble = nn.ModuleList(nets)
    # "epoch" as in a train checkpoint: the run counts as finished (load_run, export) once the
    # probabilities are fitted.
    return {"config": cfg.to_dict(), "epoch": cfg.optim.epochs if probabilities is not None else 0,
            "membersDone": len(nets), "seconds": seconds, "history": history,
            "model": {f"nets.{k}": v for k, v in ensemble.state_dict().items()}, "classes": classes,
            "commit": commit, "device": "cpu",
            "probabilities": probabilities.tolist() if probabilities is not None else None}


def train_boosted(cfg: Config, run_dir: str | Path, dataset: Dataset | None = None, progress: bool = True) -> dict:
    """Train method "barre" (see the module docstring); returns the summary written to summary.json."""

    b = cfg.boost
    run_dir = Path(run_dir)
    start_cfg, start, _ = load_run(b.start)
    if start_cfg.model != cfg.model:
        raise UserError(f"boost.start {b.start} has model {start_cfg.model}; the config asks for {cfg.model}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = dataset or load_dataset(cfg.data.name, cfg.data.root)
    classes = len(data.labels)
    ckpt = run_dir / "checkpoint.pt"
    nets: list[nn.Module] = [start.nets[0]]
    seconds, history, commit = 0.0, [], git_commit()
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["config"] != cfg.to_dict():
            raise UserError(f"{run_dir} holds a boosting run with a different config; choose another --out")
        from redtrain.models import build_member  # noqa: PLC0415

        nets = [build_member(cfg.model, classes) for _ in range(state["membersDone"])]
        nn.ModuleList(nets).load_state_dict({k[len("nets."):]: v for k, v in state["model"].items()})
        seconds, history, commit = state["seconds"], state["history"], state["commit"]
        if state.get("probabilities") is not None:
            return json.loads((run_dir / "summary.json").read_text())
    else:
        write_text_atomic(run_dir / "config.yaml", cfg.to_yaml())

    train_x, train_y = data.train.head(cfg.data.train_limit)
    a = cfg.adversarial.attack
    o = cfg.optim
    for k in range(len(nets), cfg.members):
        seed_everything(cfg.seed * 100 + k)
        started = time.time()
        new = copy.deepcopy(nets[-1]).train().requires_grad_(True)
        for m in nets:
            m.eval().requires_grad_(False)
        mixture = [*nets, new]
        optimizer = torch.optim.Adam(new.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        steps = (len(train_x) + o.batch_size - 1) // o.batch_size
        total = steps * b.epochs_per_member
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / total)))
        gen = torch.Generator().manual_seed(cfg.seed * 100 + k)
        for epoch in range(b.epochs_per_member):
            order = torch.randperm(len(train_x), generator=gen)
            sums = {"ce": 0.0, "margin": 0.0}
            for s in range(steps):
                idx = order[s * o.batch_size:(s + 1) * o.batch_size]
                x, y = to_unit(train_x[idx]), train_y[idx]
                x_adv = pgd(mixture_ce(mixture), x, y, a.eps, a.eps * a.step_ratio, a.steps, a.random_start, gen)
                logits = new(x_adv)
                ce, margin = F.cross_entropy(logits, y), margin_ce(logits, y).mean()
                optimizer.zero_grad(set_to_none=True)
                (ce + b.margin_weight * margin).backward()
                optimizer.step()
                scheduler.step()
                sums["ce"] += float(ce.detach())
                sums["margin"] += float(margin.detach())
            record = {"member": k, "epoch": epoch + 1, **{n: round(v / steps, 5) for n, v in sums.items()}}
            history.append(record)
            if progress:
                print(json.dumps(record), flush=True)
        nets.append(new.eval().requires_grad_(False))
        seconds += time.time() - started
        save_atomic(_state(cfg, nets, classes, seconds, history, commit, None), ckpt)

    check = cfg.adversarial.check
    x_check, y_check = to_unit(data.test.images[-check.examples:]), data.test.labels[-check.examples:]
    started = time.time()
    probabilities, rounds = fit_probabilities(nets, x_check, y_check, a.eps, b.rounds, b.probability_step,
                                              b.arc_iterations, torch.Generator().manual_seed(cfg.seed))
    seconds += time.time() - started
    history.append({"probabilityRounds": rounds})
    save_atomic(_state(cfg, nets, classes, seconds, history, commit, probabilities), ckpt)
    test_x, test_y = data.test.head(cfg.data.test_limit)
    evaluation = accuracy(nets, test_x, test_y, torch.device("cpu"), weights=probabilities)
    held_out = accuracy(nets, data.test.images[-check.examples:], y_check, torch.device("cpu"))
    summary = {"members": cfg.members, "seconds": round(seconds, 1), "commit": commit, "evaluation": evaluation,
               "probabilities": [float(v) for v in probabilities], "rounds": rounds,
               "memberCleanErrors": [round(1 - a, 6) for a in held_out["memberAccuracy"]]}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
