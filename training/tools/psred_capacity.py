"""Quick capacity probe for PS-RED generator shapes: clean training only (no adversarial examples, no
RED regularizers), so that a shape costs minutes, not an hour. Prints, per variant, the trainable
parameters and the random-draw clean test accuracy after the given epochs.

    .venv/bin/python training/tools/psred_capacity.py --threads 1 --epochs 1 \
        '{"method": "red"}' '{}' '{"chunk_dim": 32}' '{"chunk_dim": 36, "hidden": 44}'

Each variant is a JSON object of `hypernet` keys laid over
training/configs/experiments/exp-fmnist-psred-no-emblr.yaml (the PS-RED recipe before embedding_lr_scale)
(`"method": "red"` trains N independent members instead, the reference; `"lr"` sets optim.lr;
`"distill"` sets loss.distill, e.g. `{"distill": {"teacher": "models/fmnist-red"}}`; `"model"` is laid over
the member architecture, e.g. `{"model": {"hidden": 32}}`).
Clean training ranks shapes by how well the shared generator can express one member at all; the
adversarial gap is larger (see training/README.md, "Shipped packages"). `--full-objective
--train-limit N` trains with the config's whole RED objective on the first N images instead: slower,
but it ranks variants by what the shipped run pays for.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from redtrain.config import config_from_dict
from redtrain.data import load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.psred import HyperEnsemble
from redtrain.objective import loss_terms
from redtrain.ensemble import accuracy, build_ensemble
from redtrain.train import load_teacher

BASE = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "exp-fmnist-psred-no-emblr.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="JSON objects of hypernet keys ('{}' is the config as is)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-objective", action="store_true",
                        help="train with the config's whole RED objective (PGD mix, L_sim, L_lip), not clean CE")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N training images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = yaml.safe_load(BASE.read_text())
    if not args.full_objective:
        base["adversarial"]["enabled"] = False
        base["loss"]["l_sim"] = base["loss"]["l_lip"] = 0.0
    base["optim"]["epochs"] = args.epochs
    data = load_dataset(base["data"]["name"], base["data"]["root"])
    batch = base["optim"]["batch_size"]
    n_train = min(args.train_limit or len(data.train.images), len(data.train.images))
    steps = n_train // batch

    for text in args.variants:
        try:
            variant = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"variant {text!r} is not a JSON object: {exc}") from None
        if not isinstance(variant, dict):
            raise UserError(f"variant {text!r} is not a JSON object")
        raw = json.loads(json.dumps(base))
        raw["method"] = variant.pop("method", "ps-red")
        raw["optim"]["lr"] = variant.pop("lr", raw["optim"]["lr"])
        if "distill" in variant:
            raw["loss"]["distill"] = variant.pop("distill")
        model = variant.pop("model", {})
        if not isinstance(model, dict):
            raise UserError(f"variant {text!r}: \"model\" must be a JSON object of model keys, got {model!r}")
        raw["model"].update(model)
        raw["hypernet"].update(variant)
        cfg = config_from_dict(raw)
        torch.manual_seed(0)
        ens = HyperEnsemble(cfg, 10) if cfg.method == "ps-red" else build_ensemble(cfg, 10)
        teacher = load_teacher(cfg, cfg.members)
        opt = torch.optim.Adam(ens.parameters(), cfg.optim.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps * args.epochs)
        started = time.time()
        gen = torch.Generator().manual_seed(0)
        for epoch in range(args.epochs):
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch))
            for s in range(steps):
                idx = order[s * batch:(s + 1) * batch]
                loss = loss_terms(ens.members(), to_unit(data.train.images[idx]), data.train.labels[idx], cfg, gen,
                                   teacher)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        ens.eval()
        acc = accuracy(ens.members(), data.test.images, data.test.labels, torch.device("cpu"))
        params = sum(p.numel() for p in ens.parameters())
        print(f"{raw['method']:6} {text:40} parameters {params:7d}  "
              f"random draw {acc['randomDrawAccuracy']:.4f}  {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"psred_capacity: {err}") from None
