"""The peers' shared core: the package's ONNX members in Python onnxruntime (one thread each), the
input check and the per-image draw. app.py (FastAPI) and raw.py (a bare ASGI callable) serve it.
"""
from __future__ import annotations

import json
import os
import pathlib
import secrets

import numpy as np
import onnxruntime as ort

PACKAGE = pathlib.Path(os.environ.get("REDSERVE_PEER_MODEL", "models/fmnist-red"))
MANIFEST = json.loads((PACKAGE / "manifest.json").read_text())
INPUT = MANIFEST["input"]["name"]
SHAPE = MANIFEST["input"]["shape"]
CLASSES = MANIFEST["output"]["classes"]


def _session(path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


SESSIONS = [_session(PACKAGE / m["file"]) for m in MANIFEST["members"]]


def problem(name: str, datatype: str, shape: list[int]) -> str | None:
    """Why a tensor is not this model's input, or None."""
    if name != INPUT or datatype != "FP32" or shape[1:] != SHAPE:
        return f"expected {INPUT} FP32 [N, {', '.join(map(str, SHAPE))}]"
    return None


def classify(x: np.ndarray) -> np.ndarray:
    """Probabilities [n, classes]: each image answered by its own uniformly drawn member."""
    n = x.shape[0]
    draws = np.array([secrets.randbelow(len(SESSIONS)) for _ in range(n)])
    probs = np.empty((n, CLASSES), dtype=np.float32)
    for member in np.unique(draws):
        rows = np.flatnonzero(draws == member)
        logits = SESSIONS[member].run(None, {INPUT: x[rows]})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[rows] = e / e.sum(axis=1, keepdims=True)
    return probs


def response(name: str, request_id: str | None, probs: np.ndarray) -> dict:
    n = probs.shape[0]
    return {"model_name": name, "id": request_id,
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [n, CLASSES], "data": probs.ravel().tolist()}]}
