"""Run an exported ONNX member as a differentiable PyTorch module.

White-box evaluation must attack exactly the weights the service serves, not a training checkpoint
that might differ from them. This module reads the graph and initializers of an ONNX file and
executes them with torch operators, so autograd gives input gradients through the served weights.
It covers the operators our exporters emit for `cnn-small` and `resnet20` members; anything else is
refused by name. `evaluate` checks every member built here against onnxruntime before attacking it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from redtrain.errors import UserError


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _symmetric_padding(x: torch.Tensor, at: dict, dims: int, value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX pads are [begin_1..begin_n, end_1..end_n]; torch's conv and pool take one symmetric
    padding, so unequal pads are applied to x first."""
    pads = at.get("pads", [0] * 2 * dims)
    begin, end = list(pads[:dims]), list(pads[dims:])
    if begin == end:
        return x, begin
    return F.pad(x, [p for pair in zip(reversed(begin), reversed(end)) for p in pair], value=value), [0] * dims


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, at: dict) -> torch.Tensor:
    dims = w.dim() - 2
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UserError("Conv with auto_pad is not supported; export with explicit pads")
    x, padding = _symmetric_padding(x, at, dims)
    return F.conv2d(x, w, b, stride=at.get("strides", [1] * dims), padding=padding,
                    dilation=at.get("dilations", [1] * dims), groups=at.get("group", 1))


def _maxpool(x: torch.Tensor, at: dict) -> torch.Tensor:
    kernel = at["kernel_shape"]
    dims = len(kernel)
    x, padding = _symmetric_padding(x, at, dims, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride=at.get("strides", [1] * dims), padding=padding,
                        dilation=at.get("dilations", [1] * dims), ceil_mode=bool(at.get("ceil_mode", 0)))


def _gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, at: dict) -> torch.Tensor:
    if at.get("transA", 0):
        a = a.t()
    if at.get("transB", 0):
        b = b.t()
    out = at.get("alpha", 1.0) * (a @ b)
    return out if c is None else out + at.get("beta", 1.0) * c


def _batchnorm(x, scale, bias, mean, var, at: dict) -> torch.Tensor:
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=at.get("epsilon", 1e-5))


def _reduce_mean(x: torch.Tensor, axes, at: dict) -> torch.Tensor:
    axes = at.get("axes", axes)
    keep = bool(at.get("keepdims", 1))
    if axes is None:
        return x.mean().reshape([1] * x.dim()) if keep else x.mean()
    dims = [int(a) for a in (axes.tolist() if isinstance(axes, torch.Tensor) else axes)]
    return x.mean(dim=dims, keepdim=keep)


# op type -> f(inputs, attributes); inputs are tensors (None for an omitted optional input).
_OPS: dict[str, Callable[[list, dict], torch.Tensor]] = {
    "Conv": lambda i, at: _conv(i[0], i[1], i[2] if len(i) > 2 else None, at),
    "Relu": lambda i, at: torch.relu(i[0]),
    "MaxPool": lambda i, at: _maxpool(i[0], at),
    "Flatten": lambda i, at: torch.flatten(i[0], at.get("axis", 1)) if at.get("axis", 1) > 0 else i[0].reshape(1, -1),
    "Gemm": lambda i, at: _gemm(i[0], i[1], i[2] if len(i) > 2 else None, at),
    "MatMul": lambda i, at: i[0] @ i[1],
    "Add": lambda i, at: i[0] + i[1],
    "Sub": lambda i, at: i[0] - i[1],
    "Mul": lambda i, at: i[0] * i[1],
    "Div": lambda i, at: i[0] / i[1],
    "BatchNormalization": lambda i, at: _batchnorm(*i[:5], at),
    "GlobalAveragePool": lambda i, at: i[0].mean(dim=(2, 3), keepdim=True),
    "ReduceMean": lambda i, at: _reduce_mean(i[0], i[1] if len(i) > 1 else None, at),
    "Reshape": lambda i, at: i[0].reshape([int(s) if int(s) != 0 else i[0].shape[k]
                                          for k, s in enumerate(i[1].tolist())]),
    "Identity": lambda i, at: i[0],
}


class OnnxMember(torch.nn.Module):
    """One ONNX graph (single input, single output) executed with torch ops.

    `weights` overrides or supplies initializers by name: a PS-RED target graph has its weights as
    external data that the hypernetwork generates, so they arrive here instead of from the file.
    """

    def __init__(self, model: onnx.ModelProto, weights: dict[str, np.ndarray] | None = None,
                 label: str = "member") -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in _OPS and n.op_type != "Constant"})
        if unsupported:
            raise UserError(f"{label}: ONNX operators not supported by the evaluator: {', '.join(unsupported)}")
        weights = dict(weights or {})
        self._constants: dict[str, torch.Tensor] = {}
        for init in graph.initializer:
            if init.name in weights:
                array = weights.pop(init.name)
            elif init.data_location == onnx.TensorProto.EXTERNAL:
                raise UserError(f"{label}: initializer {init.name} is external data and no weights were given for it")
            else:
                array = numpy_helper.to_array(init)
            self._constants[init.name] = torch.from_numpy(np.array(array, copy=True))
        if weights:
            raise UserError(f"{label}: weights given for tensors the graph does not have: {', '.join(sorted(weights))}")
        initializer_names = set(self._constants)
        inputs = [i.name for i in graph.input if i.name not in initializer_names]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UserError(f"{label}: expected one input and one output, found {inputs} -> "
                            f"{[o.name for o in graph.output]}")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        self._nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self._constants[node.output[0]] = torch.from_numpy(
                    np.array(numpy_helper.to_array(_attrs(node)["value"]), copy=True))
            else:
                self._nodes.append((node.op_type, list(node.input), list(node.output), _attrs(node)))
        # Float parameters follow .to(device) as buffers; integer shape constants stay as they are.
        for k, (name, tensor) in enumerate(self._constants.items()):
            self.register_buffer(f"c{k}", tensor, persistent=False)
        self._buffer_names = {name: f"c{k}" for k, name in enumerate(self._constants)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor | None] = {"": None, self.input_name: x}
        for name, attr in self._buffer_names.items():
            values[name] = getattr(self, attr)
        for op_type, inputs, outputs, at in self._nodes:
            values[outputs[0]] = _OPS[op_type]([values[n] for n in inputs], at)
        return values[self.output_name]
