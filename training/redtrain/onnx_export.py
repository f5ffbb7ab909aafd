"""PyTorch -> ONNX, the one step both package kinds share (export.py, psred_export.py)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

OPSET = 17


def export_onnx(module: nn.Module, shape: tuple[int, int, int], path: Path) -> None:
    """One member as ONNX: input `input` [batch, C, H, W], output `logits` [batch, classes]."""
    module = module.cpu().eval()
    dummy = torch.zeros(1, *shape)
    torch.onnx.export(
        module, (dummy,), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))
