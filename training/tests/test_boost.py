"""BARRE-style boosting (redtrain.boost): its pieces on known answers, and a tiny run end to end."""

import json

import pytest
import torch
from torch import nn

from conftest import synthetic_dataset, tiny_config
from redtrain.boost import fit_probabilities, margin_ce, project_simplex
from redtrain.errors import UserError
from redtrain.export import export_run
from redtrain.manifest import check_package
from redtrain.runs import load_run
from redtrain.train import train

STRIDED = {"arch": "cnn-strided", "widths": [4, 6], "hidden": 8}
AT = {"method": "independent-at", "loss": {"l_sim": 0.0, "l_lip": 0.0}}


def test_project_simplex():
    torch.testing.assert_close(project_simplex(torch.tensor([0.5, -0.5], dtype=torch.float64)),
                               torch.tensor([1.0, 0.0], dtype=torch.float64))
    p = project_simplex(torch.tensor([0.2, 0.3, 0.1], dtype=torch.float64))  # shifted by a constant
    torch.testing.assert_close(p, torch.tensor([0.2, 0.3, 0.1], dtype=torch.float64) + 0.4 / 3)
    q = project_simplex(torch.randn(7, dtype=torch.float64))
    assert q.min() >= 0 and abs(float(q.sum()) - 1) < 1e-12


def test_margin_ce():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    expected = torch.nn.functional.softplus(torch.tensor([1.0 - 3.0, 2.0 - 0.0]))
    torch.testing.assert_close(margin_ce(logits, y), expected)


def _constant_member(label: int) -> nn.Module:
    """Logits that favour `label` whatever the input (still a function of it, for autograd)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 3).float() * 5)
    return net


def test_probabilities_move_to_the_member_that_no_attack_breaks():
    good, bad = _constant_member(0), _constant_member(1)
    x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)
    p, rounds = fit_probabilities([good, bad], x, y, 0.1, rounds=2, step=1.0, iterations=2,
                                  generator=torch.Generator().manual_seed(0))
    assert [r["arcExpectedAccuracy"] for r in rounds] == [0.5, 1.0]
    torch.testing.assert_close(p, torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_barre_config_is_checked():
    with pytest.raises(UserError, match="method barre needs boost.start"):
        tiny_config(method="barre", loss={"l_sim": 0.0, "l_lip": 0.0})


def test_tiny_boosting_run_exports_its_probabilities(tmp_path, monkeypatch):
    data = synthetic_dataset(n_train=64)
    start = tiny_config(**AT, members=1, model=STRIDED)
    train(start, tmp_path / "start", dataset=data, progress=False)
    cfg = tiny_config(method="barre", members=3, model=STRIDED, loss={"l_sim": 0.0, "l_lip": 0.0},
                      adversarial={"enabled": True, "attack": {"eps": 0.1, "steps": 1},
                                   "check": {"examples": 16}},
                      boost={"start": str(tmp_path / "start"), "epochs_per_member": 1, "rounds": 2,
                             "arc_iterations": 2})
    result = train(cfg, tmp_path / "boost", dataset=data, progress=False)
    summary = json.loads((tmp_path / "boost" / "summary.json").read_text())
    p = summary["probabilities"]
    assert len(p) == 3 and abs(sum(p) - 1) < 1e-6 and min(p) >= 0
    assert 0 <= result.evaluation["randomDrawAccuracy"] <= 1
    _, ensemble, state = load_run(tmp_path / "boost")
    assert len(ensemble.nets) == 3
    # member 1 started as a copy of member 0 and then moved
    assert not torch.equal(ensemble.nets[0].head[3].weight, ensemble.nets[1].head[3].weight)
    import redtrain.export as export_mod

    monkeypatch.setattr(export_mod, "load_dataset", lambda *a, **k: data)
    manifest = check_package(export_run(tmp_path / "boost", tmp_path / "pkg"))
    assert manifest["sampling"]["probabilities"] == state["probabilities"]
    assert "BARRE-style boosting" in manifest["training"]["objective"]
    # a finished run is not retrained
    assert train(cfg, tmp_path / "boost", dataset=data, progress=False).evaluation == result.evaluation
