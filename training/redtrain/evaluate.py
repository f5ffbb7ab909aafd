"""White-box robustness of served packages: the adaptive protocol beside the weak one.

`run_evaluation` (what `redtrain evaluate` runs) loads every package as it is served (package.py),
attacks all of them on the same test images with the protocols of protocols.py, and writes
robustness.md, robustness.json and the plots (report.py).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from redtrain.data import load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.package import check_parity, fingerprint, load_target
from redtrain.protocols import Settings, evaluate_target
from redtrain.provenance import git_commit, write_text_atomic
from redtrain.report import render_markdown, write_plots


def _reusable(out: Path, settings: Settings, examples: int) -> dict[tuple[str, str], dict]:
    """Results of an earlier run in `out` made with the same settings on the same examples."""
    try:
        earlier = json.loads((out / "robustness.json").read_text())
    except (OSError, ValueError):
        return {}
    meta = earlier.get("meta", {})
    same = (meta.get("settings") == {**asdict(settings), "curve_eps": list(settings.curve_eps)}
            and meta.get("examples") == examples)
    if not same:
        return {}
    return {(r["spec"], r.get("fingerprint", "")): r for r in earlier.get("results", [])}


def run_evaluation(specs: Sequence[str], out_dir: str | Path, settings: Settings, command: str,
                   progress: bool = True, data=None, reuse: bool = False) -> Path:
    """Evaluate every target on the same examples; write robustness.md, robustness.json and plots.

    With `reuse`, a target already in `out_dir/robustness.json` with the same settings, examples and
    package manifest is not attacked again (so one package can be added to a report without
    re-running the others).
    """
    if not specs:
        raise UserError("give at least one --package")
    started = _dt.datetime.now(_dt.timezone.utc)
    targets = [load_target(s) for s in specs]
    first = targets[0].manifest
    dataset_cfg = first.get("training", {}).get("config", {}).get("data", {})
    name = dataset_cfg.get("name", first.get("training", {}).get("dataset"))
    root = settings.data_root or dataset_cfg.get("root")
    if data is None:
        if not name or not root:
            raise UserError("the package does not record its dataset; pass --data-root")
        data = load_dataset(name, root)
    shapes = {tuple(t.manifest["input"]["shape"]) for t in targets}
    if len(shapes) != 1 or tuple(data.test.images.shape[1:]) not in shapes:
        raise UserError(f"input shapes differ: packages {sorted(shapes)}, dataset {tuple(data.test.images.shape[1:])}")
    n = data.test.images.shape[0] if settings.limit is None else min(settings.limit, data.test.images.shape[0])
    x, y = to_unit(data.test.images[:n]), data.test.labels[:n]
    parity = max(check_parity(t, x[:256]) for t in targets)
    out = Path(out_dir)
    earlier = _reusable(out, settings, n) if reuse else {}
    results = []
    for t in targets:
        key = (t.spec, fingerprint(t))
        if key in earlier:
            results.append(earlier[key])
            continue
        results.append({**evaluate_target(t, x, y, settings, progress), "fingerprint": key[1],
                        "command": command, "commit": git_commit(),
                        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})

    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "threads": torch.get_num_threads(), "examples": n, "dataset": data.name, "parityMax": parity,
            "settings": {**asdict(settings), "curve_eps": list(settings.curve_eps)},
            "seconds": (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()}
    plots = write_plots(results, out)
    write_text_atomic(out / "robustness.json", json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    write_text_atomic(out / "robustness.md", render_markdown(results, meta))
    meta["plots"] = plots
    return out / "robustness.md"
