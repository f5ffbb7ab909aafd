"""training/tools/member_health.py tells a dead member (constant output, zero gradients) from a live one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from redtrain.models import SmallCNN

_SPEC = importlib.util.spec_from_file_location(
    "member_health", Path(__file__).resolve().parents[1] / "tools" / "member_health.py")
member_health = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(member_health)


def test_a_member_whose_last_relu_never_fires_has_zero_gradients():
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    live = SmallCNN(widths=(4, 4, 4), hidden=8)
    dead = SmallCNN(widths=(4, 4, 4), hidden=8)
    with torch.no_grad():
        dead.head[1].bias.fill_(-1e3)  # every hidden unit below zero for inputs in [0, 1]
    h_live, h_dead = member_health.health(live, x, y), member_health.health(dead, x, y)
    assert h_dead["active"] == 0.0 and h_dead["logitSpread"] == 0.0
    assert h_dead["inputGrad"] == 0.0 and h_dead["weightGrad"] == 0.0
    assert h_live["active"] > 0.1 and h_live["inputGrad"] > 0.0 and h_live["weightGrad"] > 0.0
