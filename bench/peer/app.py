"""The benchmark's peer: what a user might deploy instead of redserve. The same ONNX members, served
by Python onnxruntime behind FastAPI/uvicorn, answering the Open Inference Protocol's JSON infer
request with one uniformly drawn member per image, like redserve's random sampling; no batching
across requests. Started by bench/servers.ts through bench/peer/serve.py (uvicorn's multi-worker
supervisor with TCP_NODELAY on its connections; see there why; members.py holds what the peers share):

    REDSERVE_PEER_MODEL=models/fmnist-red .venv/bin/python bench/peer/serve.py --port 8500 --workers 2
"""
from __future__ import annotations

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from members import classify, problem, response


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
    bad = problem(tensor.name, tensor.datatype, tensor.shape)
    if bad:
        raise HTTPException(400, bad)
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    return response(name, request.id, classify(x))
