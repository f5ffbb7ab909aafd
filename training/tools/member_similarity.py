"""How alike a package's members look to a gradient attacker: per package, the mean over the first
N test images of the mean over member pairs of |cos| between the members' input gradients of their
CE (the L_sim of training, at clean points; `redtrain.protocols.gradient_cosine`). Members are the
served ONNX files rebuilt in PyTorch, as `redtrain evaluate` attacks them. Seconds, not an attack run:

    .venv/bin/python training/tools/member_similarity.py models/fmnist-red models/fmnist-baseline \
        models/fmnist-psred --limit 1000

`redtrain evaluate` reports the same figure in its clean-accuracy table.
"""

from __future__ import annotations

import argparse

import torch

from redtrain.data import load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.package import load_target
from redtrain.protocols import gradient_cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+", help="package folders")
    parser.add_argument("--limit", type=int, default=1000, help="first N test images (default 1000)")
    parser.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be >= 1")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", args.data_root)
    x = to_unit(data.test.images[:args.limit])
    y = data.test.labels[:args.limit].long()
    print(f"| package | members | mean abs cosine of the members' input gradients (first {x.shape[0]} test images) |")
    print("|---|---|---|")
    for spec in args.packages:
        target = load_target(spec)
        if len(target.members) < 2:
            raise UserError(f"{spec}: one member; similarity needs at least two")
        cosine = torch.cat([gradient_cosine(target.members, xb, yb) for xb, yb in zip(x.split(250), y.split(250))])
        print(f"| {target.name} | {len(target.members)} | {float(cosine.mean()):.3f} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"member_similarity: {err}") from None
