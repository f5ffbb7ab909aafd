"""Time training steps of one config with the per-member loop and the vectorised (stacked) trainer.

    python training/tools/step_speed.py --config training/configs/fmnist-red.yaml --steps 20 --threads 1

Both trainers run the same batches from the same initial weights, interleaved in rounds (loop,
stacked, loop, stacked, ...) so that a change in machine load hits both alike. The figure is images
per CPU second of this process (user + system, from the OS): with one torch thread it is the
throughput the run would have on a core of its own, and unlike wall-clock it barely moves when other
processes share the machine. Wall-clock images per second are printed beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from redtrain.config import load_config
from redtrain.data import load_dataset, to_unit
from redtrain.objective import step_terms
from redtrain.ensemble import build_ensemble
from redtrain.runs import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and trainer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, help="override optim.batch_size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.batch_size:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=args.batch_size))
    data = load_dataset(cfg.data.name, cfg.data.root)
    seed_everything(cfg.seed)
    ensemble = build_ensemble(cfg, len(data.labels))
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=cfg.optim.lr)
    b = cfg.optim.batch_size
    rates: dict[str, list[float]] = {"loop": [], "stacked": []}
    wall: dict[str, list[float]] = {"loop": [], "stacked": []}
    for r in range(args.rounds):
        for trainer in ("loop", "stacked"):
            run_cfg = dataclasses.replace(cfg, trainer=trainer)
            gen = torch.Generator().manual_seed(r)
            started, cpu_started = time.perf_counter(), time.process_time()
            for s in range(args.steps):
                idx = torch.arange(s * b, (s + 1) * b) % len(data.train.images)
                x, y = to_unit(data.train.images[idx]), data.train.labels[idx]
                terms = step_terms(ensemble, ensemble.members(), x, y, run_cfg, gen)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
            rates[trainer].append(args.steps * b / (time.process_time() - cpu_started))
            wall[trainer].append(args.steps * b / (time.perf_counter() - started))
    for trainer, values in rates.items():
        print(f"{trainer:8s} {statistics.median(values):8.1f} images per CPU second "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)}); wall-clock {statistics.median(wall[trainer]):.1f} images/s")
    ratios = [s / l for s, l in zip(rates["stacked"], rates["loop"])]
    print(f"{cfg.name}: stacked / loop = {statistics.median(ratios):.2f}x median over {args.rounds} rounds "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}), {args.steps} steps of batch {b}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
