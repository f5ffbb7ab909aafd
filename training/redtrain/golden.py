"""golden.json and golden/*.png (docs/model-format.md): reference images, their pre-processed
tensors and every member's logits on them, which the service checks each member against at load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

GOLDEN_IMAGES = 4


def write_golden(pkg: Path, pixels: np.ndarray, inputs: torch.Tensor,
                 members: Sequence[Callable[[torch.Tensor], torch.Tensor]], labels: Sequence[int] | None = None) -> None:
    """`pixels`: uint8 [n, C, H, W] images already at the package's size and colour space, so the
    pre-processed tensor is exact; `inputs`: that tensor, what the members take. Without `labels`
    (no true class known) each image's label is the averaged ensemble's answer (sampling 'mean')."""
    (pkg / "golden").mkdir()
    with torch.no_grad():
        logits = [m(inputs) for m in members]
    images = []
    for k, arr in enumerate(pixels):
        img = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
        img.save(pkg / "golden" / f"{k}.png")
        label = (int(labels[k]) if labels is not None
                 else int(torch.stack([torch.softmax(lg[k], 0) for lg in logits]).mean(0).argmax()))
        images.append({"file": f"golden/{k}.png", "label": label,
                       "input": [round(v, 8) for v in inputs[k].flatten().tolist()],
                       "logits": [lg[k].tolist() for lg in logits]})
    (pkg / "golden.json").write_text(json.dumps({"images": images}) + "\n")
