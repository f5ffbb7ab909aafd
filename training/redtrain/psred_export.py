"""Export a PS-RED ensemble as a `ps-red` package: one hypernetwork, one weightless target.

  hypernet.onnx   input `member` (int64 [1]) -> one output per target weight tensor, named as the
                  target's initializer it fills, in the target's shapes;
  target.onnx     the member architecture whose weight initializers are external data in the file
                  named by `target.externalData` (not shipped: the service generates its bytes);
  manifest        `target.tensors` maps each generated tensor to its byte range in that file.

The service runs the hypernetwork once per member, lays the outputs out as the ranges say, and
creates an ordinary session with them as initializers. Both files are checked here against PyTorch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from redtrain.errors import UserError
from redtrain.manifest import sha256_file
from redtrain.onnx_export import OPSET, export_onnx
from redtrain.psred import HyperEnsemble

WEIGHTS_FILE = "member.weights"
HYPERNET_PARITY_ATOL = 1e-5


class _HypernetGraph(nn.Module):
    """member index -> that member's named weight tensors (the graph exported as hypernet.onnx)."""

    def __init__(self, hyper: HyperEnsemble, names: list[str]) -> None:
        super().__init__()
        self.hyper = hyper
        self.names = names

    def forward(self, member: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = self.hyper.generate(member[0])
        return tuple(params[n] for n in self.names)


def _tensor_layout(hyper: HyperEnsemble) -> list[dict]:
    layout, offset = [], 0
    for name, p in hyper.member_module(0).named_parameters():
        length = p.numel() * 4
        layout.append({"name": name, "shape": list(p.shape), "offset": offset, "length": length})
        offset += length
    return layout


def _externalise(target_path: Path, layout: list[dict]) -> None:
    """Turn the named initializers of target.onnx into external data references (no bytes shipped)."""
    model = onnx.load(str(target_path), load_external_data=False)
    by_name = {t.name: t for t in model.graph.initializer}
    for entry in layout:
        init = by_name.get(entry["name"])
        if init is None:
            raise UserError(f"target.onnx has no initializer named {entry['name']}; the exporter renamed or folded it")
        if list(init.dims) != entry["shape"] or init.data_type != TensorProto.FLOAT:
            raise UserError(f"target.onnx initializer {entry['name']} is {list(init.dims)}, expected {entry['shape']} float32")
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(entry["offset"])), ("length", str(entry["length"]))):
            item = init.external_data.add()
            item.key, item.value = key, value
    target_path.write_bytes(model.SerializeToString())


@torch.no_grad()
def round_to_float16(hyper: HyperEnsemble) -> None:
    """Round every parameter to the nearest float16 value, in place (kept as float32 tensors)."""
    for p in hyper.parameters():
        p.copy_(p.half().float())


def _store_float16(path: Path) -> None:
    """Store the float32 initializers of an ONNX file as float16, each followed by a Cast back to
    float32 under its old name, so the graph computes exactly what it did when the values were
    already float16-representable (round_to_float16)."""
    model = onnx.load(str(path))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            raise UserError(f"hypernet initializer {init.name} is not float16-representable; round it first")
        kept.append(numpy_helper.from_array(half, f"{init.name}.float16"))
        casts.append(helper.make_node("Cast", [f"{init.name}.float16"], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}.to_float32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def member_weights(hypernet_path: Path, member: int, layout: list[dict]) -> bytes:
    """Run hypernet.onnx for one member and lay its outputs out as `layout` says (what the service does)."""
    session = ort.InferenceSession(str(hypernet_path), providers=["CPUExecutionProvider"])
    outputs = session.run([e["name"] for e in layout], {"member": np.array([member], dtype=np.int64)})
    buf = bytearray(sum(e["length"] for e in layout))
    for entry, value in zip(layout, outputs):
        if list(value.shape) != entry["shape"]:
            raise UserError(f"hypernet output {entry['name']} has shape {list(value.shape)}, expected {entry['shape']}")
        buf[entry["offset"]:entry["offset"] + entry["length"]] = value.astype("<f4").tobytes()
    return bytes(buf)


def target_logits(target_path: Path, weights: bytes, x: np.ndarray) -> np.ndarray:
    """Run target.onnx with generated weights (written beside a copy of it, as external data)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(target_path, Path(tmp) / "target.onnx")
        (Path(tmp) / WEIGHTS_FILE).write_bytes(weights)
        session = ort.InferenceSession(str(Path(tmp) / "target.onnx"), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"input": x.astype(np.float32)})[0]


def write_psred(hyper: HyperEnsemble, shape: tuple[int, int, int], pkg: Path, probe: torch.Tensor,
                atol: float, storage: str = "float32") -> dict:
    """Write hypernet.onnx and target.onnx into `pkg`, check them, return the manifest fragment.

    storage float16 rounds `hyper`'s parameters in place first: everything computed from it afterwards
    (golden logits, accuracy) is what the package serves.
    """
    hyper = hyper.cpu().eval()
    if storage == "float16":
        round_to_float16(hyper)
    layout = _tensor_layout(hyper)
    names = [e["name"] for e in layout]

    hypernet_path = pkg / "hypernet.onnx"
    torch.onnx.export(_HypernetGraph(hyper, names), (torch.zeros(1, dtype=torch.int64),), str(hypernet_path),
                      input_names=["member"], output_names=names, opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(onnx.load(str(hypernet_path)))
    if storage == "float16":
        _store_float16(hypernet_path)
    target_path = pkg / "target.onnx"
    export_onnx(hyper.member_module(0), shape, target_path)
    _externalise(target_path, layout)

    members = []
    for i in range(hyper.n_members):
        weights = member_weights(hypernet_path, i, layout)
        with torch.no_grad():
            expected_params = hyper.generate(i)
            for entry in layout:
                got = np.frombuffer(weights, "<f4", entry["length"] // 4, entry["offset"]).reshape(entry["shape"])
                diff = float(np.abs(got - expected_params[entry["name"]].numpy()).max())
                if not diff <= HYPERNET_PARITY_ATOL:
                    raise UserError(f"member {i}: hypernet output {entry['name']} differs from PyTorch by {diff:.3g}; "
                                    "package not written")
            expected = hyper.forward_member(i, probe).numpy()
        diff = float(np.abs(target_logits(target_path, weights, probe.numpy()) - expected).max())
        if not diff <= atol:
            raise UserError(f"member {i}: generated ONNX member differs from PyTorch by {diff:.3g} "
                            f"(allowed {atol:g}); package not written")
        members.append({"index": i, "parameters": sum(int(np.prod(e["shape"])) for e in layout)})

    report = hyper.parameter_report()
    return {
        "kind": "ps-red",
        "members": members,
        "hypernet": {"file": hypernet_path.name, "sha256": sha256_file(hypernet_path), "input": "member",
                     "parameters": report["total"], "storage": storage, "parameterReport": report},
        "target": {"file": target_path.name, "sha256": sha256_file(target_path), "externalData": WEIGHTS_FILE,
                   "tensors": layout},
    }
