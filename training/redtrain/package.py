"""The packages under evaluation, loaded as the service serves them.

Each member is rebuilt in PyTorch from the package's ONNX files (for `ps-red`, from the
hypernetwork's outputs run in onnxruntime), so that attacks can differentiate it, and `check_parity`
refuses a rebuilt member that does not compute what onnxruntime computes: what is attacked is
exactly what is served. `models/x:K` names member K of a package alone (a single, undefended model).

Attacks live in pixel space [0, 1] (8-bit pixel / 255), where eps is measured. A package whose
manifest scales or normalises its input (`input.scale`, `mean`, `std`) is attacked through that
pre-processing: every member is wrapped in `PixelInput`, which maps pixels to the model's input as
the service does, so the eps ball and the [0, 1] box stay in pixel space whatever the manifest says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from redtrain.errors import UserError
from redtrain.manifest import check_package, sha256_file
from redtrain.onnx_torch import OnnxMember
from redtrain.psred_export import member_weights, target_logits

PARITY_ATOL = 1e-4


class PixelInput(nn.Module):
    """A member fed pixels in [0, 1]: x = (255 * u * scale - mean[c]) / std[c], docs/model-format.md."""

    def __init__(self, member: nn.Module, gain: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.member = member
        self.register_buffer("gain", gain)
        self.register_buffer("offset", offset)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.member(u * self.gain + self.offset)


def input_mapping(manifest: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(gain, offset), each [C, 1, 1], with model input = u * gain + offset for pixels u in [0, 1];
    None when the package takes [0, 1] pixels as they are (scale 1/255, mean 0, std 1)."""
    spec = manifest["input"]
    channels = spec["shape"][0]
    scale = float(spec.get("scale", 1 / 255))
    mean = [float(v) for v in spec.get("mean", [0.0] * channels)]
    std = [float(v) for v in spec.get("std", [1.0] * channels)]
    if len(mean) != channels or len(std) != channels or not all(s > 0 for s in std):
        raise UserError(f"input.mean and input.std need {channels} values with std > 0, got {mean} and {std}")
    if abs(255.0 * scale - 1.0) < 1e-9 and all(m == 0 for m in mean) and all(s == 1 for s in std):
        return None
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    gain = (255.0 * scale) / std_t
    offset = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t
    return gain, offset


def sampling_probabilities(manifest: dict) -> list[float]:
    """The manifest's `sampling.probabilities` (one per member, summing to 1); uniform when absent."""
    count = len(manifest["members"])
    raw = (manifest.get("sampling") or {}).get("probabilities")
    if raw is None:
        return [1.0 / count] * count
    p = [float(v) for v in raw]
    if len(p) != count or any(v < 0 for v in p) or abs(sum(p) - 1.0) > 1e-6:
        raise UserError(f"sampling.probabilities must be {count} numbers >= 0 summing to 1, got {raw}")
    return p


@dataclass
class Target:
    """What one report column describes: a package, or one member of it served alone.

    `members` take pixels in [0, 1] (wrapped in PixelInput where the manifest normalises);
    `probabilities` are the chances that each answers a request."""

    spec: str
    name: str
    manifest: dict
    members: list[nn.Module]
    probabilities: list[float]

    def model_input(self, u: np.ndarray) -> np.ndarray:
        """Pixels in [0, 1] -> what the ONNX members take, as the service pre-processes."""
        mapping = input_mapping(self.manifest)
        if mapping is None:
            return u
        gain, offset = (t.numpy() for t in mapping)
        return (u * gain + offset).astype(np.float32)


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
    mapping = input_mapping(manifest)
    if mapping is not None:
        members = [PixelInput(m, *mapping) for m in members]
    for module in members:
        module.eval()
    name = manifest["name"]
    probabilities = sampling_probabilities(manifest)
    if single is not None:
        if not 0 <= single < len(members):
            raise UserError(f"{spec}: member {single} is out of range [0, {len(members)})")
        members, name, probabilities = [members[single]], f"{name} member {single} alone", [1.0]
    return Target(spec, name, manifest, members, probabilities)


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
    reference = _onnxruntime_logits(target, target.model_input(x.numpy()))
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
