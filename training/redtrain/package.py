"""The packages under evaluation, loaded as the service serves them.

Each member is rebuilt in PyTorch from the package's ONNX files (for `ps-red`, from the
hypernetwork's outputs run in onnxruntime), so that attacks can differentiate it, and `check_parity`
refuses a rebuilt member that does not compute what onnxruntime computes: what is attacked is
exactly what is served. `models/x:K` names member K of a package alone (a single, undefended model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from redtrain.errors import UserError
from redtrain.manifest import check_package, sha256_file
from redtrain.onnx_torch import OnnxMember
from redtrain.psred_export import member_weights, target_logits

PARITY_ATOL = 1e-4


@dataclass
class Target:
    """What one report column describes: a package, or one member of it served alone."""

    spec: str
    name: str
    manifest: dict
    members: list[OnnxMember]


def parse_spec(spec: str) -> tuple[Path, int | None]:
    """`models/x` is the package; `models/x:K` is its member K alone (a single, undefended model)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and not Path(spec).exists():
        return Path(head), int(tail)
    return Path(spec), None


def _ensemble_members(pkg: Path, manifest: dict) -> list[OnnxMember]:
    return [OnnxMember(onnx.load(str(pkg / m["file"])), label=f"{pkg}/{m['file']}") for m in manifest["members"]]


def _psred_members(pkg: Path, manifest: dict) -> list[OnnxMember]:
    hyper = ort.InferenceSession(str(pkg / manifest["hypernet"]["file"]), providers=["CPUExecutionProvider"])
    tensors = manifest["target"]["tensors"]
    target = onnx.load(str(pkg / manifest["target"]["file"]), load_external_data=False)
    members = []
    for m in manifest["members"]:
        outputs = hyper.run([t["name"] for t in tensors],
                            {manifest["hypernet"]["input"]: np.array([m["index"]], dtype=np.int64)})
        weights = {}
        for t, value in zip(tensors, outputs):
            if list(value.shape) != t["shape"]:
                raise UserError(f"{pkg}: hypernet output {t['name']} for member {m['index']} has shape "
                                f"{list(value.shape)}, the target expects {t['shape']}")
            weights[t["name"]] = value.astype(np.float32)
        members.append(OnnxMember(target, weights, label=f"{pkg} member {m['index']}"))
    return members


def load_target(spec: str) -> Target:
    pkg, single = parse_spec(spec)
    manifest = check_package(pkg)
    members = (_psred_members if manifest["kind"] == "ps-red" else _ensemble_members)(pkg, manifest)
    for module in members:
        module.eval()
    name = manifest["name"]
    if single is not None:
        if not 0 <= single < len(members):
            raise UserError(f"{spec}: member {single} is out of range [0, {len(members)})")
        members, name = [members[single]], f"{name} member {single} alone"
    return Target(spec, name, manifest, members)


def _onnxruntime_logits(target: Target, x: np.ndarray) -> list[np.ndarray]:
    """Every member's logits from onnxruntime itself (the reference the service runs)."""
    pkg, single = parse_spec(target.spec)
    m = target.manifest
    if m["kind"] == "ps-red":
        indices = [e["index"] for e in m["members"]]
        indices = indices if single is None else [indices[single]]
        return [target_logits(pkg / m["target"]["file"], member_weights(pkg / m["hypernet"]["file"], i,
                                                                          m["target"]["tensors"]), x)
                for i in indices]
    files = [e["file"] for e in m["members"]]
    files = files if single is None else [files[single]]
    out = []
    for f in files:
        session = ort.InferenceSession(str(pkg / f), providers=["CPUExecutionProvider"])
        out.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return out


def check_parity(target: Target, x: torch.Tensor) -> float:
    """Refuse to attack a rebuilt member that does not compute what onnxruntime computes."""
    reference = _onnxruntime_logits(target, x.numpy())
    worst = 0.0
    with torch.no_grad():
        for i, (module, ref) in enumerate(zip(target.members, reference)):
            diff = float(np.abs(module(x).numpy() - ref).max())
            if not diff <= PARITY_ATOL:
                raise UserError(f"{target.spec}: member {i} rebuilt in PyTorch differs from onnxruntime by "
                                f"{diff:.3g} (allowed {PARITY_ATOL:g}); not evaluating weights that are not served")
            worst = max(worst, diff)
    return worst


def fingerprint(target: Target) -> str:
    """Identifies the served weights: the manifest names every file with its sha256."""
    pkg, _ = parse_spec(target.spec)
    return sha256_file(pkg / "manifest.json")
