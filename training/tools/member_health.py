"""Per-member health of a training run's checkpoint: is any member dead?

    python training/tools/member_health.py --run runs/study/red-faithful-at-s0 --images 256

For each member, on the first --images test images: clean accuracy, the fraction of the last ReLU
layer's units that fire, the spread of its logits over images, the mean norm of its input gradient
and the norm of its weight gradient (all parameters but the last bias). A member whose last ReLU
never fires outputs one constant vector: its input and weight gradients are exactly zero, so no
optimiser step can revive it, and a loss that rewards small or dissimilar input gradients (RED's
L_sim and L_lip) is minimised by it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from redtrain.data import load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.runs import load_run


def health(member: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    relus = [m for m in member.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise SystemExit("member_health: the member has no ReLU layer to inspect")
    seen: list[torch.Tensor] = []
    hook = relus[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    x = x.clone().requires_grad_(True)
    logits = member(x)
    hook.remove()
    member.zero_grad()
    nn.functional.cross_entropy(logits, y, reduction="sum").backward()
    params = [p for p in member.parameters() if p.grad is not None][:-1]  # all but the last bias
    return {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "active": float((seen[-1] > 0).float().mean()),
        "logitSpread": float(logits.detach().std(0).mean()),
        "inputGrad": float(x.grad.flatten(1).norm(dim=1).mean()),
        "weightGrad": float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)) / len(y)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a training run directory (config.yaml, checkpoint.pt)")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    try:
        cfg, ensemble, ckpt = load_run(run, unfinished=True)
        data = load_dataset(cfg.data.name, cfg.data.root)
    except UserError as exc:
        raise SystemExit(f"member_health: {exc}") from None
    x, y = to_unit(data.test.images[:args.images]), data.test.labels[:args.images]
    print(f"{run}: epoch {ckpt['epoch']}, first {len(y)} test images")
    print("| member | clean accuracy | last ReLU active | logit spread | input-gradient norm | weight-gradient norm |")
    print("|---|---|---|---|---|---|")
    for i in range(cfg.members):
        h = health(ensemble.member_module(i), x, y)
        print(f"| {i} | {100 * h['accuracy']:.1f}% | {100 * h['active']:.1f}% | {h['logitSpread']:.2g} | "
              f"{h['inputGrad']:.2g} | {h['weightGrad']:.2g} |")


if __name__ == "__main__":
    main()
