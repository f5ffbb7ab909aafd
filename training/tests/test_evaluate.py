"""White-box evaluation: the ONNX-to-PyTorch rebuild, APGD and DLR on known cases, the protocols, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from conftest import synthetic_dataset
from redtrain.attacks import apgd, apgd_checkpoints, dlr_loss, pgd_worst
from redtrain.errors import UserError
from redtrain.evaluate import run_evaluation
from redtrain.package import load_target
from redtrain.protocols import Settings, gradient_cosine, transfer_counts, transfer_matrix
from redtrain.models import ResNet20
from redtrain.onnx_torch import OnnxMember

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures"


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    module.eval()
    torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def test_dlr_loss_known_values():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    # y = 0: -(3 - 2) / (3 - 1); y = 2: -(1 - 3) / (3 - 1)
    assert dlr_loss(logits, torch.tensor([0, 2])).tolist() == pytest.approx([-0.5, 1.0])
    # Scale invariance: the same ratios for logits ten times larger.
    assert dlr_loss(10 * logits, torch.tensor([0, 2])).tolist() == pytest.approx([-0.5, 1.0])


def test_apgd_checkpoints_follow_the_published_schedule():
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_onnx_member_matches_onnxruntime_on_resnet20(tmp_path):
    """Covers BatchNormalization, Add, Sub/Div normalisation and global pooling, not only the small CNN."""
    torch.manual_seed(0)
    net = ResNet20()
    for m in net.modules():  # non-trivial running statistics, so batch norm is really exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    _export(net, (3, 32, 32), tmp_path / "r.onnx")
    x = torch.rand(4, 3, 32, 32)
    member = OnnxMember(onnx.load(str(tmp_path / "r.onnx")))
    ref = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(member(x).numpy() - ref).max() <= 1e-4
    # And gradients flow to the input, which is what the attacks need.
    x.requires_grad_(True)
    member(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_onnx_member_refuses_unknown_operators(tmp_path):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sin(x).flatten(1)

    _export(Odd(), (1, 2, 2), tmp_path / "odd.onnx")
    with pytest.raises(UserError, match="not supported by the evaluator: Sin"):
        OnnxMember(onnx.load(str(tmp_path / "odd.onnx")))


def _linear_member(w: torch.Tensor) -> nn.Module:
    """Three classes on 4 pixels: logits (w . x, 0, -10)."""
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([w, torch.zeros(4), torch.zeros(4)]))
        layer.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))
    return nn.Sequential(nn.Flatten(), layer)


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr", "pgd"])
def test_attacks_reach_the_analytic_optimum_of_a_linear_model(attack):
    # Class 0 needs w . x > 0. The best Linf move lowers w . x by eps * ||w||_1 (inside [0, 1]): with
    # w = (1, -1, 1, -1), eps 0.1 that is 0.4, so an example at margin 0.3 flips and one at margin 0.5
    # ends exactly at margin 0.1.
    w = torch.tensor([1.0, -1.0, 1.0, -1.0])
    member = _linear_member(w)
    x = torch.full((2, 1, 2, 2), 0.5)
    x[0, 0, 0, 0] += 0.3
    x[1, 0, 0, 0] += 0.5
    y = torch.zeros(2, dtype=torch.long)
    stacked = lambda z: torch.stack([member(z)])  # noqa: E731
    g = torch.Generator().manual_seed(0)
    if attack == "pgd":
        x_adv = pgd_worst(stacked, x, y, 0.1, 20, 0.025, g)
    else:
        x_adv = apgd(stacked, x, y, 0.1, 20, attack.split("-")[1], g)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        logits = member(x_adv)
    assert logits.argmax(dim=1).tolist() == [1, 0]
    assert float(logits[1, 0]) == pytest.approx(0.1, abs=1e-5)


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


def test_apgd_stays_in_the_ball_and_pixel_range():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(16, 3)) for _ in range(3)]
    x = torch.rand(6, 1, 4, 4)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.randint(0, 3, (6,))
    for loss in ("ce", "dlr"):
        x_adv = apgd(lambda z: torch.stack([m(z) for m in members]), x, y, 0.2, 15, loss, torch.Generator().manual_seed(0))
        assert (x_adv - x).abs().max() <= 0.2 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_transfer_between_identical_members_equals_white_box():
    torch.manual_seed(0)
    m = _linear_member(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    x = torch.rand(32, 1, 2, 2)
    y = (m(x).argmax(dim=1))  # every example right by construction
    fooled, clean = transfer_counts([m, m], x, y, 0.2, 10, torch.Generator().manual_seed(0))
    matrix = transfer_matrix(fooled, clean)
    assert clean.tolist() == [32.0, 32.0]
    assert matrix[0][1] == matrix[0][0] and matrix[1][0] == matrix[1][1] and matrix[0][0] > 0


def test_gradient_cosine_is_one_for_identical_members_and_zero_for_orthogonal_ones():
    x = torch.rand(5, 1, 2, 2)
    y = torch.zeros(5, dtype=torch.long)
    a = _linear_member(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    b = _linear_member(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(gradient_cosine([a, a], x, y), torch.ones(5), atol=1e-6)
    assert torch.allclose(gradient_cosine([a, b], x, y), torch.zeros(5), atol=1e-6)
    # three members: pairs (a, a) 1, (a, b) 0, (a, b) 0 -> 1/3 on every example
    assert torch.allclose(gradient_cosine([a, a, b], x, y), torch.full((5,), 1 / 3), atol=1e-6)


def test_report_from_a_small_run(tmp_path):
    data = synthetic_dataset(n_train=8, n_test=24)
    settings = Settings(limit=16, apgd_steps=3, pgd_steps=2, weak_steps=2, transfer_steps=2, curve_steps=2,
                        batch_size=8, member_steps=3, arc_iterations=2)
    path = run_evaluation([str(FIXTURES / "tiny-ensemble"), f"{FIXTURES / 'tiny-ensemble'}:0",
                           str(FIXTURES / "tiny-psred")], tmp_path, settings, "redtrain evaluate (test)",
                          progress=False, data=data)
    text = path.read_text()
    assert "| attack | tiny-ensemble | tiny-ensemble member 0 alone |" in text
    for row in ("| weak protocol |", "| PGD-2 |", "| APGD-CE-3 |", "| APGD-DLR-3 |", "| APGD-T-3 (top 3) |",
                "| APGD-3 clamped margin |", "| APGD-CE-3 per member |", "| ARC-2 g=1 |", "| ARC-2 g=2 |",
                "| ARC-2 g=2 from the worst point |", "| worst of PGD, APGD-CE, APGD-DLR (first starts) |",
                "| **adaptive (worst of the above, per example)** |"):
        assert row in text
    assert "tiny-ensemble member 0 alone" in text and "first 16 images" in text
    report = json.loads((tmp_path / "robustness.json").read_text())
    results = report["results"]
    assert [r["members"] for r in results] == [3, 1, len(load_target(str(FIXTURES / "tiny-psred")).members)]
    for r in results:
        # The per-example worst of three attacks can be no better than any one of them.
        worst = r["attacks"]["adaptive (worst of the above, per example)"]["expected"]
        assert all(worst <= a["expected"] + 1e-9 for k, a in r["attacks"].items() if "worst" not in k)
        # Per image: how many members the worst attack left correct; their mean is the figure above.
        counts = r["attacks"]["adaptive (worst of the above, per example)"]["correctMembers"]
        assert len(counts) == 16 and all(0 <= c <= r["members"] for c in counts)
        assert sum(counts) / (16 * r["members"]) == pytest.approx(worst, abs=1e-6)  # uniform draw
        per_image = r["attacks"]["adaptive (worst of the above, per example)"]["accuracyPerImage"]
        assert sum(per_image) / 16 == pytest.approx(worst, abs=1e-5)
        # The worst case before the new attacks can be no lower, and no attack lowers it by its absence.
        assert r["worstCase"]["base"] >= worst - 1e-9
        assert all(v >= -1e-9 for v in r["worstCase"]["withoutEach"].values())
        assert ("APGD-CE-3 per member" in r["attacks"]) == (r["members"] > 1)
        assert set(r["curve"]) == {"0.05", "0.1", "0.15", "0.2"}
    assert "transfer" in results[0] and "transfer" not in results[1]
    assert 0 <= results[0]["clean"]["gradientCosine"] <= 1 and "gradientCosine" not in results[1]["clean"]
    assert "| gradient \\|cos\\| |" in text
    assert (tmp_path / "robustness-eps.png").stat().st_size > 0
    assert (tmp_path / "robustness-transfer.png").stat().st_size > 0
    assert report["meta"]["examples"] == 16 and report["meta"]["settings"]["seed"] == 0


def test_evaluate_cli_errors_are_one_line(tmp_path, capsys):
    from redtrain.cli import main

    assert main(["evaluate", "--package", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("redtrain evaluate: error:")
    assert main(["evaluate", "--package", str(FIXTURES / "tiny-ensemble"), "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_reuse_keeps_unchanged_results_and_names_their_run(tmp_path):
    data = synthetic_dataset(n_train=8, n_test=8)
    settings = Settings(limit=8, apgd_steps=2, pgd_steps=1, weak_steps=1, transfer_steps=1, curve_steps=1,
                        curve_eps=(0.1,), batch_size=8, member_steps=1, arc_iterations=1)
    single = f"{FIXTURES / 'tiny-ensemble'}:0"
    run_evaluation([single], tmp_path, settings, "first run", progress=False, data=data)
    first = json.loads((tmp_path / "robustness.json").read_text())["results"][0]
    run_evaluation([single, str(FIXTURES / "tiny-single")], tmp_path, settings, "second run", progress=False,
                   data=data, reuse=True)
    report = json.loads((tmp_path / "robustness.json").read_text())
    assert report["results"][0] == first
    assert report["results"][1]["command"] == "second run"
    assert "- tiny-ensemble member 0 alone: `first run`" in (tmp_path / "robustness.md").read_text()
    # Other settings: nothing is reused.
    run_evaluation([single], tmp_path, Settings(**{**settings.__dict__, "pgd_steps": 2}), "third run",
                   progress=False, data=data, reuse=True)
    assert json.loads((tmp_path / "robustness.json").read_text())["results"][0]["command"] == "third run"
