"""All members in one vectorised pass: the RED objective without a Python loop over members.

Members of the `cnn-small` and `cnn-strided` architectures are evaluated together: their conv weights are concatenated
into one grouped convolution (groups = members) and their linear layers into batched matmuls, so a
step costs a few large kernels instead of members x layers small ones. This is the same function as
running each member alone; `tests/test_stacked.py` checks losses and parameter gradients against the
per-member loop in `objective.loss_terms`.

Shapes: M members, B examples. Stacked parameters carry SmallCNN's names with a leading member axis
(`features.0.weight` is [M, out, in, 3, 3]). Inputs are either shared, [B, C, H, W], or one per
member, [M, B, C, H, W]; logits come out as [M, B, K]. Per-member inputs are what make the
per-member input gradients cheap: member i's output depends only on slice i, so one backward pass of
the summed loss yields every member's gradient at once.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from redtrain.attacks import pgd
from redtrain.config import Config
from redtrain.losses import distill_loss

StackedParams = Mapping[str, torch.Tensor]
StackedForward = Callable[[torch.Tensor], torch.Tensor]  # x -> [M, B, K]


def _conv_stages(params: StackedParams) -> list[int]:
    """Indices k of the `features.k` conv layers, in order (cnn-small: conv, ReLU, pool repeat every 3;
    cnn-strided: conv, ReLU every 2)."""
    stages = sorted(int(name.split(".")[1]) for name in params if name.startswith("features.") and name.endswith(".weight"))
    if not stages:
        raise ValueError("stacked parameters hold no features.*.weight: not a cnn-small member")
    return stages


def stacked_logits(params: StackedParams, x: torch.Tensor) -> torch.Tensor:
    """Logits [M, B, K] of every SmallCNN or StridedCNN member; x is shared [B, C, H, W] or per member [M, B, C, H, W]."""
    stages = _conv_stages(params)
    members = params[f"features.{stages[0]}.weight"].shape[0]
    if x.dim() == 4:
        batch = x.shape[0]
        h = x.repeat(1, members, 1, 1)  # [B, M*C, H, W]: member m reads channels m*C..(m+1)*C
    elif x.dim() == 5 and x.shape[0] == members:
        batch = x.shape[1]
        h = x.transpose(0, 1).reshape(batch, members * x.shape[2], x.shape[3], x.shape[4])
    else:
        raise ValueError(f"input must be [B, C, H, W] or [{members}, B, C, H, W], got {list(x.shape)}")
    # channels_last: oneDNN's grouped convolution and max-pooling are about twice as fast on NHWC
    # tensors on CPU (measured forward+backward on the fmnist-red shapes, one thread).
    h = h.contiguous(memory_format=torch.channels_last)
    for k in stages:
        w, b = params[f"features.{k}.weight"], params[f"features.{k}.bias"]
        if w.shape[-1] == 4:  # cnn-strided: a 4x4 conv of stride 2 halves the resolution, no pooling
            h = F.relu(F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride=2, padding=1, groups=members))
            continue
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=1, groups=members)
        # relu(max_pool(h)) == max_pool(relu(h)) (both monotone); pooling first runs the ReLU and its
        # backward on a quarter of the values.
        h = F.relu(F.max_pool2d(h, 2))
    h = h.contiguous().reshape(batch, members, -1).transpose(0, 1)  # [M, B, C*H*W], SmallCNN's flatten order
    w1, b1 = params["head.1.weight"], params["head.1.bias"]
    w2, b2 = params["head.3.weight"], params["head.3.bias"]
    h = F.relu(torch.baddbmm(b1.unsqueeze(1), h, w1.transpose(1, 2)))
    return torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))


def stacked_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member, per-example cross-entropy [M, B]."""
    m, b, k = logits.shape
    return F.cross_entropy(logits.reshape(m * b, k), y.repeat(m), reduction="none").view(m, b)


def stacked_ensemble_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example NLL [B] of the averaged ensemble, log(mean softmax)."""
    log_mean = torch.logsumexp(F.log_softmax(logits, dim=2), dim=0) - math.log(logits.shape[0])
    return F.nll_loss(log_mean, y, reduction="none")


def stacked_input_gradients(forward: StackedForward, points: torch.Tensor, y: torch.Tensor,
                            members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-member mean CE [M], per-member per-example input gradients [M, B, D]) with the graph kept.

    `points` is shared [B, ...] or per member [M, B, ...]; either way every member gets its own leaf
    slice, so the gradient of the summed CE splits into the members' own gradients.
    """
    if points.dim() == 4:
        points = points.unsqueeze(0).expand(members, *points.shape)
    leaf = points.detach().clone().requires_grad_(True)
    per_example = stacked_ce(forward(leaf), y)
    (grad,) = torch.autograd.grad(per_example.sum(), leaf, create_graph=True)
    return per_example.mean(dim=1), grad.flatten(2)


def stacked_similarity(grads: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L_sim from gradients [M, B, D]: mean over pairs i<j and examples of |cos(g_i, g_j)|."""
    members = grads.shape[0]
    if members < 2:
        raise ValueError("gradient similarity needs at least two members")
    norms = grads.norm(dim=2)  # [M, B]
    dots = torch.einsum("mbd,nbd->bmn", grads, grads)
    cos = dots / (norms.t().unsqueeze(2) * norms.t().unsqueeze(1)).clamp_min(eps)
    i, j = torch.triu_indices(members, members, offset=1)
    return cos[:, i, j].abs().mean()


def stacked_lipschitz(grads: torch.Tensor) -> torch.Tensor:
    """L_lip from gradients [M, B, D]: mean over members of the batch mean of 2 ||g||^2."""
    return (2.0 * grads.pow(2).sum(dim=2)).mean()


def loss_terms_stacked(forward: StackedForward, members: int, x: torch.Tensor, y: torch.Tensor, cfg: Config,
                       generator: torch.Generator,
                       teacher_logits: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """The objective of `objective.loss_terms`, computed for all members at once (same terms, same values).

    `teacher_logits` ([M, B, K], no grad) replaces the teacher members when distilling.
    """
    adv = cfg.adversarial
    step = adv.attack.eps * adv.attack.step_ratio
    terms: dict[str, torch.Tensor] = {}
    x_adv = None
    if adv.enabled:
        shared = x.unsqueeze(0).expand(members, *x.shape)
        # The loop draws member 0's random start first, then member 1's ...: one draw of [M, B, ...]
        # from the same generator reads the same numbers in the same order.
        x_adv = pgd(lambda z, t: stacked_ce(forward(z), t), shared, y, adv.attack.eps, step, adv.attack.steps,
                    adv.attack.random_start, generator)

    distill = cfg.loss.distill

    def clean_ce() -> torch.Tensor:  # [M]
        logits = forward(x)
        ce = stacked_ce(logits, y).mean(dim=1)
        if teacher_logits is None:
            return ce
        kl = torch.stack([distill_loss(logits[i], teacher_logits[i], distill.temperature) for i in range(members)])
        return (1 - distill.weight) * ce + distill.weight * kl

    want_sim = cfg.method in ("red", "ps-red") and cfg.loss.l_sim > 0
    grads = None
    if want_sim:
        ce_point, grads = stacked_input_gradients(forward, x_adv if x_adv is not None else x, y, members)
        if x_adv is None and teacher_logits is not None:
            ce_point = clean_ce()
    elif x_adv is None:
        ce_point = clean_ce()
    else:
        ce_point = stacked_ce(forward(x_adv), y).mean(dim=1)
    if x_adv is not None and adv.mix < 1.0:
        ce_point = (1 - adv.mix) * clean_ce() + adv.mix * ce_point
    terms["ce"] = ce_point.sum()
    loss = terms["ce"]

    if grads is not None:
        terms["sim"] = stacked_similarity(grads)
        loss = loss + cfg.loss.l_sim * terms["sim"]
    if cfg.method in ("red", "ps-red") and cfg.loss.l_lip > 0:
        half = x.shape[0] // 2
        lip = cfg.loss.lip_attack
        x_far = pgd(lambda z, t: stacked_ensemble_nll(forward(z), t), x[half:], y[half:], lip.eps,
                    lip.eps * lip.step_ratio, lip.steps, lip.random_start, generator)
        _, lip_grads = stacked_input_gradients(forward, torch.cat([x[:half], x_far]), y, members)
        terms["lip"] = stacked_lipschitz(lip_grads)
        loss = loss + cfg.loss.l_lip * terms["lip"]
    terms["loss"] = loss
    return terms


def stack_members(members: Sequence[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Stack ordinary member modules' parameters along a new member axis (differentiable)."""
    names = [n for n, _ in members[0].named_parameters()]
    per_member = [dict(m.named_parameters()) for m in members]
    return {n: torch.stack([p[n] for p in per_member]) for n in names}
