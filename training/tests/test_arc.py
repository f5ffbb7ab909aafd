"""The attacks made for randomized ensembles: ARC, the clamped margin, per-member APGD, APGD-T,
expected accuracy weighted by the sampling probabilities, and attacks in a package's own input space."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from redtrain.arc import arc
from redtrain.attacks import WorstCase, apgd, clamped_margin_loss, expected_accuracy, targeted_dlr_loss
from redtrain.errors import UserError
from redtrain.onnx_torch import OnnxMember
from redtrain.package import check_parity, input_mapping, load_target, sampling_probabilities
from redtrain.protocols import per_member_apgd, targeted_apgd

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures"


def _threshold_member(sign: float, at: float) -> nn.Module:
    """Two pixels, three classes: logits (10 * sign * (at - x_0), 0, -10); right (class 0) on one
    side of x_0 = at."""
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-10.0 * sign, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([10.0 * sign * at, 0.0, -10.0]))
    return nn.Sequential(nn.Flatten(), layer)


def _rivals() -> list[nn.Module]:
    # At x_0 = 0.5 both are right; member 0 is fooled for x_0 > 0.55, member 1 for x_0 < 0.45. With
    # eps 0.1 either can be fooled, never both: the best attack leaves expected accuracy 0.5.
    return [_threshold_member(1.0, 0.55), _threshold_member(-1.0, 0.45)]


def _points(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((n, 1, 1, 2), 0.5), torch.zeros(n, dtype=torch.long)


def _accuracy(members, x, y, p=None) -> torch.Tensor:
    with torch.no_grad():
        return expected_accuracy(torch.stack([m(x).argmax(dim=1) == y for m in members]), p)


@pytest.mark.parametrize("g", [1, 2])
def test_arc_fools_one_of_two_members_that_no_perturbation_fools_together(g):
    members = _rivals()
    x, y = _points()
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x_adv = arc(members, x, y, 0.1, p, g=g, iterations=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert _accuracy(members, x_adv, y, p).tolist() == pytest.approx([0.5] * 4)


def test_arc_never_raises_expected_accuracy_from_its_start():
    members = _rivals()
    x, y = _points(2)
    start = x.clone()
    start[:, 0, 0, 0] = torch.tensor([0.6, 0.4])  # each example already fools one member
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x_adv = arc(members, x, y, 0.1, p, iterations=3, generator=torch.Generator().manual_seed(0), x_init=start)
    assert _accuracy(members, x_adv, y, p).tolist() == pytest.approx([0.5, 0.5])


def test_arc_finds_the_linear_boundary_of_a_single_member():
    member = _threshold_member(1.0, 0.55)
    x, y = _points(1)
    x_adv = arc([member], x, y, 0.1, torch.ones(1, dtype=torch.float64), iterations=2)
    assert _accuracy([member], x_adv, y).tolist() == [0.0]
    # The step aims at the boundary (0.55, with a small overshoot), not at the edge of the ball.
    assert 0.55 < float(x_adv[0, 0, 0, 0]) < 0.56


def test_clamped_margin_stops_pushing_a_fooled_member():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [1.0, 1.05, 0.0]], requires_grad=True)
    y = torch.zeros(3, dtype=torch.long)
    loss = clamped_margin_loss(logits, y, kappa=0.1)
    assert loss.tolist() == pytest.approx([-2.0, 0.1, 0.05])
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert grad[1].abs().sum() == 0  # fooled beyond kappa: no effort spent on it
    assert grad[0].tolist() == [-1.0, 1.0, 0.0] and grad[2].tolist() == [-1.0, 1.0, 0.0]


def test_targeted_dlr_known_values():
    logits = torch.tensor([[4.0, 3.0, 2.0, 0.0]])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) with y 0, t 2: -(4 - 2) / (4 - 1)
    assert targeted_dlr_loss(logits, torch.tensor([0]), torch.tensor([2])).item() == pytest.approx(-2 / 3)


def test_weighted_expected_accuracy_and_worst_case():
    right = torch.tensor([[True, False], [False, True], [True, True]])
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    assert expected_accuracy(right, p).tolist() == pytest.approx([0.7, 0.4])
    assert expected_accuracy(right).tolist() == pytest.approx([2 / 3, 2 / 3])
    # Fewer members right is not always worse: one wrong heavy member beats two wrong light ones.
    worst = WorstCase(torch.zeros(1, 1), 3, p)
    y = torch.zeros(1, dtype=torch.long)
    as_logits = lambda r: torch.tensor([[[1.0, 0.0]] if v else [[0.0, 1.0]] for v in r])  # noqa: E731
    worst.update(torch.ones(1, 1), as_logits([False, True, True]), y, torch.zeros(1))   # 0.4
    worst.update(torch.full((1, 1), 2.0), as_logits([True, False, False]), y, torch.zeros(1))  # 0.6
    assert worst.x.item() == 1.0 and worst.accuracy.item() == pytest.approx(0.4)


def test_apgd_weights_the_members_it_attacks_by_probability():
    members = _rivals()
    x, y = _points()
    stacked = lambda z: torch.stack([m(z) for m in members])  # noqa: E731
    p = torch.tensor([0.9, 0.1], dtype=torch.float64)
    x_adv = apgd(stacked, x, y, 0.1, 10, "ce", torch.Generator().manual_seed(0), weights=p)
    # The heavy member is the one worth fooling: 0.1 left.
    assert _accuracy(members, x_adv, y, p).tolist() == pytest.approx([0.1] * 4)


def test_per_member_attack_is_scored_on_all_members():
    members = _rivals()
    x, y = _points()
    p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x_adv = per_member_apgd(members, p, x, y, 0.1, 5, torch.Generator().manual_seed(0))
    assert _accuracy(members, x_adv, y, p).tolist() == pytest.approx([0.5] * 4)
    # Two copies of one member: attacking either alone fools both.
    same = [members[0], members[0]]
    x_adv = per_member_apgd(same, p, x, y, 0.1, 5, torch.Generator().manual_seed(0))
    assert _accuracy(same, x_adv, y, p).tolist() == [0.0] * 4
    # A member that is never drawn is not attacked, and does not count.
    x_adv = per_member_apgd(members, torch.tensor([1.0, 0.0], dtype=torch.float64), x, y, 0.1, 5, torch.Generator())
    assert _accuracy(members, x_adv, y, torch.tensor([1.0, 0.0])).tolist() == [0.0] * 4


def test_targeted_apgd_reaches_a_class_only_targets_reach():
    # Class 2 wins for x_0 > 0.55; untargeted steps would stop at class 1's flat region.
    layer = nn.Linear(2, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [20.0, 0.0], [0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([1.0, 0.5, -10.0, -5.0]))
    member = nn.Sequential(nn.Flatten(), layer)
    x, y = _points(2)
    x_adv = targeted_apgd([member], torch.ones(1, dtype=torch.float64), x, y, 0.1, 10, 3, torch.Generator())
    assert _accuracy([member], x_adv, y).tolist() == [0.0, 0.0]


def test_sampling_probabilities_from_the_manifest():
    manifest = {"members": [{}, {}, {}, {}]}
    assert sampling_probabilities(manifest) == [0.25] * 4
    assert sampling_probabilities({**manifest, "sampling": {"probabilities": [0.5, 0.25, 0.25, 0]}})[0] == 0.5
    with pytest.raises(UserError, match="summing to 1"):
        sampling_probabilities({**manifest, "sampling": {"probabilities": [0.5, 0.5, 0.5, 0]}})


def _normalising_copy(tmp_path: Path, mean: float, std: float, probabilities=None) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(FIXTURES / "tiny-ensemble", pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["input"].update(mean=[mean], std=[std])
    if probabilities is not None:
        manifest["sampling"] = {"probabilities": probabilities}
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return pkg


def test_a_package_that_normalises_is_attacked_through_its_normalisation(tmp_path):
    pkg = _normalising_copy(tmp_path, 0.5, 0.25, [0.5, 0.25, 0.25])
    target = load_target(str(pkg))
    assert target.probabilities == [0.5, 0.25, 0.25]
    assert load_target(f"{pkg}:1").probabilities == [1.0]
    gain, offset = input_mapping(target.manifest)
    assert gain.flatten().tolist() == pytest.approx([4.0]) and offset.flatten().tolist() == pytest.approx([-2.0])
    assert input_mapping(load_target(str(FIXTURES / "tiny-ensemble")).manifest) is None
    raw = OnnxMember(onnx.load(str(pkg / "member-0.onnx")))
    u = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(target.members[0](u), raw((u - 0.5) / 0.25), atol=1e-5)
        assert not torch.allclose(target.members[0](u), raw(u), atol=1e-3)
    # What is attacked is what onnxruntime computes on the pre-processed pixels.
    assert check_parity(target, u) <= 1e-4
    # The ball and the box stay in pixel units: eps 0.05 of [0, 1] pixels, not of normalised values.
    stacked = lambda z: torch.stack([m(z) for m in target.members])  # noqa: E731
    y = torch.zeros(3, dtype=torch.long)
    x_adv = apgd(stacked, u, y, 0.05, 3, "ce", torch.Generator().manual_seed(0))
    assert (x_adv - u).abs().max() <= 0.05 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
