import math

import pytest
import torch
from torch import nn

from redtrain.losses import ensemble_log_probs, gradient_similarity, input_gradients, lipschitz_penalty


def test_identical_members_have_similarity_one():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 5, (8,))
    _, g = input_gradients(net, x, y)
    assert gradient_similarity([g, g, g]).item() == pytest.approx(1.0, abs=1e-6)


def test_opposite_gradients_count_as_similar():
    g = torch.randn(6, 10)
    assert gradient_similarity([g, -g]).item() == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_gradients_have_similarity_zero():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    assert gradient_similarity([a, b]).item() == pytest.approx(0.0, abs=1e-7)


def test_similarity_is_mean_over_pairs():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.0, 1.0]])
    # pairs: (a,b)=1, (a,c)=0, (b,c)=0
    assert gradient_similarity([a, b, c]).item() == pytest.approx(1 / 3, abs=1e-6)


def test_lipschitz_matches_hand_computation_on_a_linear_model():
    # f(x) = W x; CE gradient w.r.t. x is W^T (softmax(Wx) - onehot(y)).
    torch.manual_seed(1)
    lin = nn.Linear(3, 4, bias=False)
    x, y = torch.randn(5, 3), torch.randint(0, 4, (5,))
    _, g = input_gradients(lin, x, y)
    W = lin.weight.detach()
    p = torch.softmax(x @ W.T, dim=1)
    manual = (p - nn.functional.one_hot(y, 4).float()) @ W
    assert torch.allclose(g, manual, atol=1e-6)
    expected = (2 * manual.pow(2).sum(1)).mean()
    assert lipschitz_penalty([g]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert lipschitz_penalty([g, 2 * g]).item() == pytest.approx((expected * (1 + 4) / 2).item(), rel=1e-5)


def test_double_backprop_reaches_the_weights():
    torch.manual_seed(2)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)) for _ in range(2)]
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 3, (4,))
    grads = [input_gradients(n, x, y)[1] for n in nets]
    (gradient_similarity(grads) + lipschitz_penalty(grads)).backward()
    for n in nets:
        for p in n.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_ensemble_log_probs_is_log_mean_softmax():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    expected = torch.log((torch.softmax(a, 1) + torch.softmax(b, 1)) / 2)
    assert torch.allclose(ensemble_log_probs([a, b]), expected, atol=1e-6)
    assert math.isclose(ensemble_log_probs([a, b]).exp().sum(1)[0].item(), 1.0, rel_tol=1e-6)
