"""Export a finished run as a redserve model package (docs/model-format.md).

Steps:
  1. load the run's checkpoint and its dataset;
  2. export every member to ONNX (opset 17, dynamic batch axis) in a temporary sibling folder;
  3. check each ONNX member against PyTorch with onnxruntime (max abs logit difference <= 1e-4);
  4. write golden images, tensors and logits, then measure clean test accuracy;
  5. write manifest.json and validate the whole package against the format;
  6. swap the temporary folder into place. Any failure before step 6 leaves the old package intact.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from redtrain.config import Config
from redtrain.data import Dataset, load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.golden import GOLDEN_IMAGES, write_golden
from redtrain.manifest import check_package, sha256_file
from redtrain.models import count_parameters, input_shape
from redtrain.onnx_export import OPSET, export_onnx
from redtrain.provenance import git_commit, replace_folder, staging_folder
from redtrain.psred_export import write_psred
from redtrain.ensemble import Ensemble, accuracy
from redtrain.runs import load_run

PARITY_ATOL = 1e-4
GOLDEN_ATOL = 1e-4


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x.astype(np.float32)})[0]


def check_parity(module: nn.Module, path: Path, x: torch.Tensor, label: str, atol: float = PARITY_ATOL) -> float:
    """Max abs logit difference between PyTorch and onnxruntime; raises UserError above atol."""
    with torch.no_grad():
        expected = module(x).numpy()
    got = onnx_logits(path, x.numpy())
    diff = float(np.abs(expected - got).max()) if got.shape == expected.shape else float("inf")
    if not diff <= atol:
        raise UserError(
            f"{label}: ONNX output differs from PyTorch by {diff:.3g} (allowed {atol:g}); package not written"
        )
    return diff


def _parity_inputs(data: Dataset, shape: tuple[int, int, int]) -> torch.Tensor:
    real = to_unit(data.test.images[:32])
    noise = torch.rand(16, *shape, generator=torch.Generator().manual_seed(0))
    return torch.cat([real, noise])


def export_record(opset: int = OPSET, *, torch_exported: bool = True) -> dict:
    """The manifest's `export` entry: the versions that wrote and checked the members, and when
    (torch only where torch exported them)."""
    return {"opset": opset, **({"torch": torch.__version__} if torch_exported else {}), "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "createdAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def finish_package(tmp: Path, out: Path, manifest: dict) -> None:
    """Write manifest.json into the staging folder, validate the whole package, then swap it into
    place; a package that fails validation never reaches `out`."""
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    check_package(tmp)
    replace_folder(tmp, out)


def objective(cfg: Config) -> str:
    """The training loss in words, with the values that shape it, for humans reading a manifest."""
    adv, a = cfg.adversarial, cfg.adversarial.attack
    d = cfg.loss.distill
    clean = (f"[(1 - {d.weight:g}) * CE(clean) + {d.weight:g} * T^2 * KL(teacher member at T || member at T), "
             f"T {d.temperature:g}, teacher {d.teacher}]") if d.teacher else "CE(clean)"
    if cfg.method == "barre":
        b = cfg.boost
        return (f"BARRE-style boosting from {b.start}: member k starts as member k-1 and trains on PGD examples of "
                f"the uniform mixture of members 0..k (Linf eps {a.eps:g}, {a.steps} steps of {a.eps * a.step_ratio:g}) "
                f"with CE + {b.margin_weight:g} * margin CE, {b.epochs_per_member} epochs each; sampling "
                f"probabilities fitted on the simplex against ARC over {b.rounds} rounds")
    if adv.enabled and adv.loss == "trades":
        return (f"sum over members of CE(clean) + {adv.trades_beta:g} * KL(member at clean || member at x'), x' from "
                f"PGD on that KL: Linf eps {a.eps:g}, {a.steps} steps of {a.eps * a.step_ratio:g} (TRADES)")
    if adv.enabled:
        ce = (f"sum over members of (1 - {adv.mix:g}) * {clean} + {adv.mix:g} * CE(PGD on that member: "
              f"Linf eps {a.eps:g}, {a.steps} steps of {a.eps * a.step_ratio:g}"
              f"{', random start' if a.random_start else ''})")
    else:
        ce = f"sum over members of {clean}"
    if cfg.method not in ("red", "ps-red"):
        return ce
    lip = cfg.loss.lip_attack
    where = "the PGD points" if adv.enabled else "the clean points"
    return (f"{ce} + {cfg.loss.l_sim:g} * L_sim (mean over member pairs of batch-mean |cos| of input gradients "
            f"at {where}) + {cfg.loss.l_lip:g} * L_lip (member mean of batch-mean 2*||input gradient||^2 on half "
            f"clean, half PGD against the averaged ensemble: eps {lip.eps:g}, {lip.steps} steps of "
            f"{lip.eps * lip.step_ratio:g})")


def _write_members(cfg: Config, ensemble: nn.Module, shape: tuple[int, int, int], pkg: Path, probe: torch.Tensor,
                   atol: float) -> dict:
    """Write the members' ONNX files into `pkg` after checking each against PyTorch; return the
    manifest fragment (kind, members, and for ps-red the hypernet and target entries)."""
    if cfg.method == "ps-red":
        return write_psred(ensemble, shape, pkg, probe, atol, storage=cfg.hypernet.storage)
    entries = []
    for i in range(len(ensemble.members())):
        module = ensemble.member_module(i)
        path = pkg / f"member-{i}.onnx"
        export_onnx(module, shape, path)
        check_parity(module, path, probe, f"member {i}", atol)
        entries.append({"file": path.name, "sha256": sha256_file(path), "parameters": count_parameters(module)})
    return {"kind": "ensemble", "members": entries}


def export_package(cfg: Config, ensemble: nn.Module, out: str | Path, data: Dataset, *, name: str | None = None,
                   version: str = "1.0.0", training_record: dict | None = None,
                   parity_atol: float = PARITY_ATOL, probabilities: list[float] | None = None) -> Path:
    out = Path(out)
    tmp = staging_folder(out)
    try:
        shape = input_shape(cfg.model.arch)
        ensemble = ensemble.cpu().eval()
        members = ensemble.members()
        probe = _parity_inputs(data, shape)
        stored = _write_members(cfg, ensemble, shape, tmp, probe, parity_atol)
        golden = data.test.images[:GOLDEN_IMAGES]
        write_golden(tmp, golden.numpy(), to_unit(golden), members, data.test.labels[:GOLDEN_IMAGES].tolist())
        test_x, test_y = data.test.images, data.test.labels
        if cfg.data.test_limit is not None:
            test_x, test_y = test_x[:cfg.data.test_limit], test_y[:cfg.data.test_limit]
        weights = torch.tensor(probabilities, dtype=torch.float64) if probabilities is not None else None
        evaluation = {"split": "test", **accuracy(members, test_x, test_y, torch.device("cpu"), weights=weights)}
        channels = "gray" if shape[0] == 1 else "rgb"
        manifest = {
            "format": "redserve-package",
            "formatVersion": 1,
            "name": name or cfg.name,
            "version": version,
            "kind": stored.pop("kind"),
            "description": f"{cfg.method} ensemble of {cfg.members} {cfg.model.arch} members on {data.name}",
            "input": {"name": "input", "shape": list(shape), "channels": channels, "scale": 1 / 255,
                      "mean": [0.0] * shape[0], "std": [1.0] * shape[0],
                      "resize": {"fit": "contain", "kernel": "linear", "background": 0}},
            "output": {"name": "logits", "classes": len(data.labels)},
            "labels": list(data.labels),
            **stored,
            **({"sampling": {"probabilities": list(probabilities)}} if probabilities is not None else {}),
            "golden": {"file": "golden.json", "sha256": sha256_file(tmp / "golden.json"), "atol": GOLDEN_ATOL},
            "training": {"method": cfg.method, "seed": cfg.seed, "dataset": data.name,
                         "commit": git_commit(), "objective": objective(cfg),
                         "config": json.loads(json.dumps(cfg.to_dict())), **(training_record or {})},
            "evaluation": evaluation,
            "export": export_record(),
        }
        finish_package(tmp, out, manifest)
        return out
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def export_run(run_dir: str | Path, out: str | Path, *, name: str | None = None, version: str = "1.0.0",
               hypernet_storage: str | None = None) -> Path:
    """Export a finished run. `hypernet_storage` overrides the run's `hypernet.storage` (how
    hypernet.onnx stores its parameters; training does not depend on it)."""
    cfg, ensemble, state = load_run(run_dir)
    if hypernet_storage is not None:
        if cfg.method != "ps-red":
            raise UserError(f"--hypernet-storage applies to ps-red runs; {run_dir} has method '{cfg.method}'")
        cfg = dataclasses.replace(cfg, hypernet=dataclasses.replace(cfg.hypernet, storage=hypernet_storage))
    data = load_dataset(cfg.data.name, cfg.data.root)
    # training.commit (set by export_package) is the code that exported; trainCommit is the code
    # the run started with.
    record = {"epochs": state["epoch"], "trainSeconds": round(state["seconds"], 1),
              "trainDevice": state.get("device", "cpu"), "trainCommit": state.get("commit", "unknown")}
    return export_package(cfg, ensemble, out, data, name=name, version=version, training_record=record,
                          probabilities=state.get("probabilities"))


def _same_recipe(config: dict) -> dict:
    """What runs joined into one package must share: everything but the seed and the name (and
    threads, trainer and device, which change speed only)."""
    return {k: v for k, v in config.items() if k not in ("seed", "name", "threads", "trainer", "device")}


def export_runs(run_dirs: list[str | Path], out: str | Path, *, name: str | None = None,
                version: str = "1.0.0") -> Path:
    """Export the members of several finished runs of one recipe, differing only in seed, as one
    ensemble package: members trained independently, side by side, as one ensemble."""
    loaded = [load_run(r) for r in run_dirs]
    first_cfg = loaded[0][0]
    if first_cfg.method not in ("independent", "independent-at"):
        raise UserError(f"joining runs applies to independent members; {run_dirs[0]} has method '{first_cfg.method}' "
                        "(its members were trained together)")
    for run_dir, (cfg, _, _) in zip(run_dirs, loaded):
        if _same_recipe(cfg.to_dict()) != _same_recipe(first_cfg.to_dict()):
            raise UserError(f"{run_dir} was trained with another recipe than {run_dirs[0]}; "
                            "only runs that differ in seed can be joined")
    seeds = [cfg.seed for cfg, _, _ in loaded]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"the runs share a seed ({seeds}); their members would be the same")
    nets = [net for _, ensemble, _ in loaded for net in ensemble.nets]
    cfg = dataclasses.replace(first_cfg, members=len(nets), name=name or first_cfg.name)
    ensemble = Ensemble(cfg, loaded[0][2]["classes"])
    ensemble.nets = nn.ModuleList(nets)
    data = load_dataset(cfg.data.name, cfg.data.root)
    record = {"seeds": seeds, "runs": [{"seed": c.seed, "members": c.members, "epochs": st["epoch"],
                                        "trainSeconds": round(st["seconds"], 1), "trainDevice": st.get("device", "cpu"),
                                        "trainCommit": st.get("commit", "unknown")} for c, _, st in loaded],
              "trainSeconds": round(sum(st["seconds"] for _, _, st in loaded), 1)}
    return export_package(cfg, ensemble, out, data, name=name, version=version, training_record=record)
