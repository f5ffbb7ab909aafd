import torch
from torch import nn

from redtrain.attacks import ensemble_ce, member_ce, pgd, project


def test_projection_stays_in_ball_and_pixel_range():
    x = torch.rand(10, 1, 5, 5)
    far = x + torch.randn_like(x) * 3
    p = project(far, x, 0.1)
    assert (p - x).abs().max() <= 0.1 + 1e-7
    assert p.min() >= 0 and p.max() <= 1


def test_pgd_stays_in_ball_and_raises_the_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(25, 10))
    x, y = torch.rand(32, 1, 5, 5), torch.randint(0, 10, (32,))
    for eps in (0.03, 0.1, 0.3):
        adv = pgd(member_ce(net), x, y, eps, eps / 4, 10, random_start=True, generator=torch.Generator().manual_seed(1))
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert member_ce(net)(adv, y).mean() > member_ce(net)(x, y).mean()


def test_pgd_against_the_ensemble_uses_every_member():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(25, 10)) for _ in range(3)]
    x, y = torch.rand(8, 1, 5, 5), torch.randint(0, 10, (8,))
    pgd(ensemble_ce(nets), x, y, 0.1, 0.025, 2, random_start=False)
    # no weight gradients are left behind by an attack
    assert all(p.grad is None for n in nets for p in n.parameters())
