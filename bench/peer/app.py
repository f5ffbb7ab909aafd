"""The benchmark's peer: what a user might deploy instead of redserve. The same ONNX members, served
by Python onnxruntime behind FastAPI/uvicorn, answering the Open Inference Protocol's JSON infer
request with one uniformly drawn member per image, like redserve's random sampling; no batching
across requests. Started by bench/servers.ts through bench/peer/serve.py (uvicorn's multi-worker
supervisor with TCP_NODELAY on its connections; see there why):

    REDSERVE_PEER_MODEL=models/fmnist-red .venv/bin/python bench/peer/serve.py --port 8500 --workers 2
"""
from __future__ import annotations

import json
import os
import pathlib
import secrets

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

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


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]


app = FastAPI()


@app.get("/v2/health/ready")
def ready() -> dict:
    return {}


@app.post("/v2/models/{name}/infer")
def infer(name: str, request: InferRequest) -> dict:
    tensor = request.inputs[0]
    if tensor.name != INPUT or tensor.datatype != "FP32" or tensor.shape[1:] != SHAPE:
        raise HTTPException(400, f"expected {INPUT} FP32 [N, {', '.join(map(str, SHAPE))}]")
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    n = x.shape[0]
    draws = np.array([secrets.randbelow(len(SESSIONS)) for _ in range(n)])
    probs = np.empty((n, CLASSES), dtype=np.float32)
    for member in np.unique(draws):
        rows = np.flatnonzero(draws == member)
        logits = SESSIONS[member].run(None, {INPUT: x[rows]})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[rows] = e / e.sum(axis=1, keepdims=True)
    return {
        "model_name": name,
        "id": request.id,
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [n, CLASSES], "data": probs.ravel().tolist()}],
    }
