"""The trained object: an ensemble of members, how to build one from a config, and its clean accuracy.

Training (train.py, boost.py), export and the tools all work on what this module builds; keeping
it apart from the training loop lets export load a run without importing the loop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from redtrain.config import Config
from redtrain.data import to_unit
from redtrain.errors import UserError
from redtrain.losses import ensemble_log_probs
from redtrain.models import build_member
from redtrain.stacked import stack_members

Member = Callable[[torch.Tensor], torch.Tensor]


def pick_device(choice: str = "auto") -> torch.device:
    """The config's `device`: "auto" is CUDA when torch sees a GPU, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for, but torch sees no CUDA device (use auto or cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


class Ensemble(nn.Module):
    """N independent members. `members()` is what the losses see: a list of callables, so a
    hypernetwork ensemble (PS-RED) can present generated members through the same interface."""

    def __init__(self, cfg: Config, classes: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList([build_member(cfg.model, classes) for _ in range(cfg.members)])

    def members(self) -> list[Member]:
        return list(self.nets)

    def member_module(self, index: int) -> nn.Module:
        """A standalone nn.Module computing member `index` (what export writes as ONNX)."""
        return self.nets[index]

    def stacked_params(self) -> dict[str, torch.Tensor]:
        """Every member's parameters with a leading member axis (for the vectorised trainer)."""
        return stack_members(list(self.nets))


def build_ensemble(cfg: Config, classes: int) -> nn.Module:
    if cfg.method == "ps-red":
        from redtrain.psred import HyperEnsemble  # noqa: PLC0415 (optional feature)

        return HyperEnsemble(cfg, classes)
    return Ensemble(cfg, classes)


@torch.no_grad()
def accuracy(members: Sequence[Member], images: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int = 1000, weights: torch.Tensor | None = None) -> dict[str, object]:
    """Clean accuracy of each member, of the random draw (the mean over members, weighted by the
    sampling probabilities `weights` when given) and of the averaged ensemble (argmax of the mean
    softmax, weighted alike)."""
    correct = torch.zeros(len(members))
    correct_ens = 0
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start:start + batch_size]).to(device)
        y = labels[start:start + batch_size].to(device)
        logits = [m(x) for m in members]
        for i, z in enumerate(logits):
            correct[i] += (z.argmax(1) == y).sum().item()
        if weights is None:
            mean = ensemble_log_probs(logits)
        else:
            mean = (torch.stack([F.softmax(z, 1) for z in logits]) * weights.to(z.dtype).view(-1, 1, 1)).sum(0)
        correct_ens += (mean.argmax(1) == y).sum().item()
    member_acc = (correct / len(images)).tolist()
    p = [1.0 / len(members)] * len(members) if weights is None else [float(w) for w in weights]
    return {
        "memberAccuracy": [round(a, 6) for a in member_acc],
        "randomDrawAccuracy": round(sum(w * a for w, a in zip(p, member_acc)), 6),
        "ensembleAccuracy": round(correct_ens / len(images), 6),
        "examples": len(images),
    }
