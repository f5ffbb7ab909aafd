"""The vectorised step computes the per-member loop's objective: same terms, same parameter gradients.

Compared in float64 so that PGD's signed steps cannot flip on rounding noise; tolerance 1e-9 relative
plus 1e-10 absolute on every term and every parameter gradient.
"""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_dataset, tiny_config
from redtrain.data import to_unit
from redtrain.stacked import stack_members, stacked_logits, stacked_similarity
from redtrain.losses import gradient_similarity
from redtrain.objective import loss_terms, step_terms
from redtrain.ensemble import build_ensemble

RTOL, ATOL = 1e-9, 1e-10


def _batch(n: int = 16):
    data = synthetic_dataset(n_train=n, n_test=8)
    return to_unit(data.train.images).double(), data.train.labels


def _terms_and_grads(cfg, ensemble, x, y, stacked: bool):
    ensemble.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(7)
    if stacked:
        terms = step_terms(ensemble, ensemble.members(), x, y, cfg, gen)
    else:
        terms = loss_terms(ensemble.members(), x, y, cfg, gen)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in ensemble.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


CASES = {
    "red": {},
    "red-clean-ce": {"adversarial": {"enabled": False}},
    "red-pure-adv": {"adversarial": {"enabled": True, "mix": 1.0, "attack": {"eps": 0.1, "steps": 2}}},
    "independent-at": {"method": "independent-at", "loss": {"l_sim": 0.0, "l_lip": 0.0}},
    "independent-at-strided": {"method": "independent-at", "loss": {"l_sim": 0.0, "l_lip": 0.0},
                               "model": {"arch": "cnn-strided", "widths": [4, 6], "hidden": 8}},
    "red-strided": {"model": {"arch": "cnn-strided", "widths": [3, 5], "hidden": 7}},
    "independent": {"method": "independent", "loss": {"l_sim": 0.0, "l_lip": 0.0}, "adversarial": {"enabled": False}},
    "ps-red": {"method": "ps-red", "hypernet": {"member_gains": True, "member_scale": True}},
    "ps-red-adapter": {"method": "ps-red", "hypernet": {"adapter_rank": 2}},
    "ps-red-per-member": {"method": "ps-red", "hypernet": {"per_member": True, "member_dim": 2, "chunk_dim": 4}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stacked_step_matches_the_member_loop(case):
    cfg = tiny_config(**CASES[case])
    assert cfg.stacked
    torch.manual_seed(0)
    ensemble = build_ensemble(cfg, 10).double()
    x, y = _batch()
    loop_terms, loop_grads = _terms_and_grads(cfg, ensemble, x, y, stacked=False)
    fast_terms, fast_grads = _terms_and_grads(cfg, ensemble, x, y, stacked=True)
    assert loop_terms.keys() == fast_terms.keys()
    for k in loop_terms:
        torch.testing.assert_close(fast_terms[k], loop_terms[k], rtol=RTOL, atol=ATOL, msg=f"term {k}")
    assert loop_grads.keys() == fast_grads.keys() and loop_grads
    for n in loop_grads:
        torch.testing.assert_close(fast_grads[n], loop_grads[n], rtol=RTOL, atol=ATOL, msg=f"gradient of {n}")


@pytest.mark.parametrize("model", [{}, {"arch": "cnn-strided", "widths": [4, 6], "hidden": 8}])
def test_stacked_logits_equal_each_member(model):
    cfg = tiny_config(members=4, model=model)
    ensemble = build_ensemble(cfg, 10)
    x, _ = _batch(8)
    x = x.float()
    stacked = stacked_logits(ensemble.stacked_params(), x)
    per_member_input = stacked_logits(ensemble.stacked_params(), x.unsqueeze(0).expand(4, *x.shape))
    for i, member in enumerate(ensemble.members()):
        torch.testing.assert_close(stacked[i], member(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(per_member_input[i], member(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(stack_members(list(ensemble.nets))["head.3.bias"][2], ensemble.nets[2].head[3].bias)


def test_similarity_matches_pairwise_cosines():
    g = torch.randn(5, 7, 30, dtype=torch.float64)
    torch.testing.assert_close(stacked_similarity(g), gradient_similarity(list(g)), rtol=1e-12, atol=1e-12)


def test_stacked_trainer_refuses_other_architectures():
    from redtrain.errors import UserError

    with pytest.raises(UserError, match="trainer: 'stacked' needs model.arch cnn-small or cnn-strided"):
        tiny_config(trainer="stacked", model={"arch": "resnet20"})
    assert not tiny_config(model={"arch": "resnet20"}).stacked
    assert not tiny_config(trainer="loop").stacked
    # TRADES has no stacked form: auto picks the loop.
    assert not tiny_config(method="independent-at", loss={"l_sim": 0.0, "l_lip": 0.0},
                           adversarial={"enabled": True, "loss": "trades"}).stacked
