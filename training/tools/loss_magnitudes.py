"""Sizes of the RED loss terms on one training batch: summed CE, L_sim and per-example L_lip.

    python training/tools/loss_magnitudes.py --package models/fmnist-red --package models/fmnist-baseline \
        --config training/configs/experiments/study-red-faithful.yaml

For trained packages (members rebuilt from their ONNX files) and for a freshly initialised ensemble of
a config, on the first --batch training images (clean points). It is what the loss weights multiply,
so it says whether a weight taken from another setting (the paper's CIFAR-10 ResNet-18) leaves a term
that matters here.
"""

from __future__ import annotations

import argparse

import torch

from redtrain.config import load_config
from redtrain.data import load_dataset, to_unit
from redtrain.package import load_target
from redtrain.stacked import stacked_input_gradients, stacked_lipschitz, stacked_logits, stacked_similarity
from redtrain.ensemble import build_ensemble


def terms(forward, members: int, x: torch.Tensor, y: torch.Tensor) -> str:
    ce, grads = stacked_input_gradients(forward, x, y, members)
    ce, grads = ce.detach(), grads.detach()
    return (f"summed CE {float(ce.sum()):.3f}, L_sim {float(stacked_similarity(grads)):.3f}, "
            f"per-example L_lip {float(stacked_lipschitz(grads)):.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", action="append", default=[])
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", args.data_root)
    x, y = to_unit(data.train.images[:args.batch]), data.train.labels[:args.batch]
    for spec in args.package:
        members = load_target(spec).members
        forward = lambda z, ms=members: torch.stack([m(z[i]) for i, m in enumerate(ms)])  # noqa: E731
        print(f"{spec} ({len(members)} members, trained): {terms(forward, len(members), x, y)}")
    for path in args.config:
        cfg = load_config(path)
        params = build_ensemble(cfg, len(data.labels)).stacked_params()
        print(f"{path} ({cfg.members} members, at initialisation): "
              f"{terms(lambda z: stacked_logits(params, z), cfg.members, x, y)}")
    print(f"(first {args.batch} training images, clean)")


if __name__ == "__main__":
    main()
