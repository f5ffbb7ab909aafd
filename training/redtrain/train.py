"""The training loop: one step function per method, atomic checkpoints, resumable runs.

A run folder holds config.yaml (the resolved config), checkpoint.pt (written atomically after every
epoch), history.jsonl (one line of figures per epoch) and, once finished, summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from redtrain.attacks import member_ce, pgd
from redtrain.config import AdversarialConfig, Config, OptimConfig
from redtrain.data import Dataset, load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.ensemble import Member, accuracy, build_ensemble, pick_device
from redtrain.objective import step_terms
from redtrain.provenance import git_commit, write_text_atomic
from redtrain.runs import kept_weights, save_atomic, seed_everything


class WeightAverage:
    """Exponential moving average of a module's floating-point parameters and buffers, updated
    after every optimizer step with decay min(decay, (1 + t) / (10 + t)) at step t."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        self.state = {k: v.clone() for k, v in saved["state"].items()}


def pgd_accuracy(members: Sequence[Member], images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int,
                 device: torch.device, batch_size: int = 500) -> float:
    """Random-draw accuracy (mean over members) under PGD on each member's own CE, step eps/4 with a
    random start: the per-epoch check for catastrophic overfitting, not an evaluation."""
    generator = torch.Generator().manual_seed(0)
    correct = 0.0
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start:start + batch_size]).to(device)
        y = labels[start:start + batch_size].to(device)
        for m in members:
            x_adv = pgd(member_ce(m), x, y, eps, eps / 4, steps, True, generator)
            with torch.no_grad():
                correct += (m(x_adv).argmax(1) == y).sum().item() / len(members)
    return correct / len(images)


def load_teacher(cfg: Config, members: int) -> list[Member] | None:
    """The teacher package's members as frozen torch modules (loss.distill.teacher), or None."""
    path = cfg.loss.distill.teacher
    if not path:
        return None
    from redtrain.package import load_target  # noqa: PLC0415 (only distillation needs onnx)

    target = load_target(path)
    if len(target.members) != members:
        raise UserError(f"loss.distill.teacher {path} has {len(target.members)} members; the run trains {members}")
    for m in target.members:
        m.requires_grad_(False)
    return list(target.members)


def parameter_groups(ensemble: nn.Module, cfg: Config) -> list[dict]:
    """The optimizer's parameter groups: one, or for ps-red with `hypernet.embedding_lr_scale` != 1 a
    second group holding the chunk and member embeddings at optim.lr times that scale (the schedule
    scales both alike)."""
    params = [p for p in ensemble.parameters() if p.requires_grad]
    scale = cfg.hypernet.embedding_lr_scale
    if cfg.method != "ps-red" or scale == 1.0:
        return [{"params": params}]
    embeddings = [ensemble.chunk_embedding, ensemble.member_embedding]
    chosen = {id(p) for p in embeddings}
    return [{"params": [p for p in params if id(p) not in chosen]},
            {"params": embeddings, "lr": cfg.optim.lr * scale}]


def _resume_identity(config: dict) -> dict:
    """The parts of a config a resumed run must share with the run it continues.

    `threads`, `trainer` and `device` change speed, not the objective, and `hypernet.storage` only how export writes the
    result; the hypernet section means nothing outside ps-red, so a later change of its defaults
    must not strand runs of the other methods.
    Keys added since a run started compare equal to their absence while they hold their defaults
    (no distillation teacher, no member gains), so older runs still resume.
    """
    identity = json.loads(json.dumps({k: v for k, v in config.items() if k not in ("threads", "trainer", "device")}))
    adversarial = dataclasses.asdict(AdversarialConfig())
    defaults = {"optim": {"ema": OptimConfig().ema},
                "adversarial": {k: adversarial[k] for k in ("loss", "trades_beta", "check")}}
    for section, keys in defaults.items():
        values = identity.get(section)
        if isinstance(values, dict):
            for k, v in keys.items():
                if values.get(k, v) == v:
                    values.pop(k, None)
    if identity.get("method") != "barre":
        identity.pop("boost", None)
    if identity.get("method") != "ps-red":
        identity.pop("hypernet", None)
    elif isinstance(identity.get("hypernet"), dict):
        identity["hypernet"] = {k: v for k, v in identity["hypernet"].items()
                                if k != "storage" and not (k == "member_gains" and v is False)}
    loss = identity.get("loss")
    if isinstance(loss, dict) and not (loss.get("distill") or {}).get("teacher"):
        loss.pop("distill", None)
    return identity


@dataclass
class RunResult:
    run_dir: Path
    epochs_done: int
    seconds: float
    evaluation: dict


def train(cfg: Config, run_dir: str | Path, dataset: Dataset | None = None, progress: bool = True) -> RunResult:
    run_dir = Path(run_dir)
    if cfg.method == "barre":
        from redtrain.boost import train_boosted  # noqa: PLC0415 (its own loop, member after member)

        summary = train_boosted(cfg, run_dir, dataset, progress)
        return RunResult(run_dir, cfg.optim.epochs, summary["seconds"], summary["evaluation"])
    # The teacher is loaded before anything is written: a bad teacher path leaves no run folder.
    teacher = load_teacher(cfg, cfg.members)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    cfg_path = run_dir / "config.yaml"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = dataset or load_dataset(cfg.data.name, cfg.data.root)
    train_x, train_y = data.train.head(cfg.data.train_limit)
    test_x, test_y = data.test.head(cfg.data.test_limit)
    check = cfg.adversarial.check
    check_x, check_y = data.test.images[-check.examples:], data.test.labels[-check.examples:]

    seed_everything(cfg.seed)
    ensemble = build_ensemble(cfg, len(data.labels)).to(device)
    params = parameter_groups(ensemble, cfg)
    o = cfg.optim
    if o.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    steps_per_epoch = (len(train_x) + o.batch_size - 1) // o.batch_size
    total_steps = steps_per_epoch * o.epochs
    schedule = (lambda s: 0.5 * (1 + np.cos(np.pi * s / total_steps))) if o.schedule == "cosine" else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    # The commit is taken once, when the run starts: later epochs run the code loaded then,
    # whatever HEAD has moved to since.
    start_epoch, seconds, history, commit = 0, 0.0, [], git_commit()
    average = WeightAverage(ensemble, o.ema) if o.ema > 0 else None
    # The weights the run keeps: the averaged ones when optim.ema is on (the raw ones only resume).
    kept = (lambda: average.state) if average else ensemble.state_dict
    best: dict = {}  # with the overfitting check: the best epoch's kept weights and PGD accuracy
    stopped = False
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        if _resume_identity(state["config"]) != _resume_identity(cfg.to_dict()):
            raise UserError(
                f"{run_dir} holds a run with a different config; resume with the same config or choose another --out"
            )
        ensemble.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, seconds, history = state["epoch"], state["seconds"], state["history"]
        commit = state.get("commit", commit)
        if average:
            average.load_state_dict(state["average"])
        best, stopped = state.get("best", {}), state.get("stopped", False)
        torch.set_rng_state(state["rng"])
        if progress:
            print(f"resuming {run_dir} after epoch {start_epoch}/{o.epochs}")
    else:
        write_text_atomic(cfg_path, cfg.to_yaml())

    members = ensemble.members()
    for epoch in range(start_epoch, o.epochs):
        if stopped:
            break
        ensemble.train()
        started = time.time()
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        attack_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 1)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{o.epochs}", disable=not progress,
                   mininterval=2.0, dynamic_ncols=True, unit="step")
        sums: dict[str, float] = {}
        for step in bar:
            idx = order[step * o.batch_size:(step + 1) * o.batch_size]
            x, y = to_unit(train_x[idx]).to(device), train_y[idx].to(device)
            terms = step_terms(ensemble, members, x, y, cfg, attack_gen, teacher)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            if average:
                average.update(ensemble)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            images_per_s = (step + 1) * o.batch_size / max(time.time() - started, 1e-9)
            bar.set_postfix({**{k: f"{v / (step + 1):.3f}" for k, v in sums.items()}, "img/s": f"{images_per_s:.0f}"},
                            refresh=False)
        bar.close()
        ensemble.eval()
        raw = {k: v.clone() for k, v in ensemble.state_dict().items()} if average else None
        if average:
            ensemble.load_state_dict(average.state)
        evaluation = accuracy(ensemble.members(), test_x, test_y, device)
        checked = {}
        if check.enabled:
            acc = pgd_accuracy(ensemble.members(), check_x, check_y, cfg.adversarial.attack.eps, check.steps, device)
            checked = {"checkPgdAccuracy": round(acc, 6)}
            if not best or acc >= best["accuracy"]:
                best = {"epoch": epoch + 1, "accuracy": acc, "model": {k: v.clone() for k, v in kept().items()}}
            elif acc < best["accuracy"] - check.drop:
                stopped = True
                checked["stopped"] = (f"PGD accuracy {acc:.3f} fell more than {check.drop} below epoch "
                                      f"{best['epoch']}'s {best['accuracy']:.3f}: catastrophic overfitting")
        if raw is not None:
            ensemble.load_state_dict(raw)
        seconds += time.time() - started
        record = {"epoch": epoch + 1, "seconds": round(seconds, 1),
                  **{k: round(v / steps_per_epoch, 5) for k, v in sums.items()}, **evaluation, **checked}
        history.append(record)
        with open(run_dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if progress:
            print(f"epoch {epoch + 1}: random-draw acc {evaluation['randomDrawAccuracy']:.4f}, "
                  f"ensemble acc {evaluation['ensembleAccuracy']:.4f}, {seconds:.0f} s so far", flush=True)
        save_atomic({"config": cfg.to_dict(), "epoch": epoch + 1, "seconds": seconds, "history": history,
                      "model": ensemble.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                      "classes": len(data.labels), "commit": commit, "device": str(device),
                      "average": average.state_dict() if average else None, "best": best, "stopped": stopped},
                     ckpt_path)

    ensemble.eval()
    ensemble.load_state_dict(kept_weights({"model": ensemble.state_dict(), "best": best,
                                            "average": average.state_dict() if average else None}))
    chosen = [r for r in history if best and r["epoch"] == best["epoch"]]
    evaluation = (chosen or history)[-1] if history else accuracy(ensemble.members(), test_x, test_y, device)
    summary = {"epochs": o.epochs, "epochsRun": len(history), "seconds": round(seconds, 1), "device": str(device),
               "threads": torch.get_num_threads(), "commit": commit,
               "weights": ("EMA " if average else "") + (f"of epoch {best['epoch']} (best check)" if best else "final"),
               "evaluation": {k: evaluation[k] for k in ("memberAccuracy", "randomDrawAccuracy",
                                                           "ensembleAccuracy", "examples")}}
    if stopped:
        summary["stopped"] = history[-1].get("stopped", "stopped by the overfitting check")
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return RunResult(run_dir, o.epochs, seconds, summary["evaluation"])
