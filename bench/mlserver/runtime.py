"""MLServer custom runtime serving a redserve model package, the benchmark's second peer: the
Open Inference Protocol server of the KServe ecosystem, with its adaptive batching and its pool of
inference worker processes, running the same ONNX members in Python onnxruntime.

bench/servers.ts writes a model repository per server (settings.json and one model-settings.json)
and starts `mlserver start <repository>` with this folder on PYTHONPATH. The model's settings name
this class and carry the package folder in `parameters.uri` and the sampling in
`parameters.extra.sampling`:

    random  (model `red-random`) one member per image, drawn with `secrets.randbelow`
    mean    (model `red-mean`)   every member, softmax probabilities averaged, as redserve's mean

The draw is per image, as redserve and the FastAPI peer draw. Adaptive batching hands `predict` the
images of several requests merged into one tensor; drawing per image means no two requests ever share
a draw, so the batch boundaries do not matter (MLServer does not show them to a runtime anyway).
"""

from __future__ import annotations

import json
import pathlib
import secrets

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse

SAMPLINGS = ("random", "mean")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class RedEnsembleRuntime(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        package = pathlib.Path(params.uri)
        extra = params.extra or {}
        self._sampling = extra.get("sampling", "random")
        if self._sampling not in SAMPLINGS:
            raise ValueError(f"parameters.extra.sampling: '{self._sampling}' is not one of {', '.join(SAMPLINGS)}")
        manifest = json.loads((package / "manifest.json").read_text())
        if manifest.get("kind") != "ensemble":
            raise ValueError(f"{package}: kind '{manifest.get('kind')}' is not 'ensemble' (the runtime needs ONNX members)")
        self._input = manifest["input"]["name"]
        self._shape = list(manifest["input"]["shape"])
        self._classes = manifest["output"]["classes"]
        options = ort.SessionOptions()
        # One onnxruntime thread per worker process, as redserve's workers and the FastAPI peer run.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._sessions = [
            ort.InferenceSession(str(package / m["file"]), options, providers=["CPUExecutionProvider"])
            for m in manifest["members"]
        ]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"inputs: expected 1 tensor, got {len(payload.inputs)}")
        tensor = payload.inputs[0]
        if tensor.name != self._input or tensor.datatype != "FP32" or list(tensor.shape[1:]) != self._shape:
            raise InferenceError(
                f"inputs[0]: expected {self._input} FP32 [N, {', '.join(map(str, self._shape))}], "
                f"got {tensor.name} {tensor.datatype} {list(tensor.shape)}"
            )
        x = NumpyCodec.decode_input(tensor).astype(np.float32, copy=False).reshape([-1, *self._shape])
        n = x.shape[0]
        if self._sampling == "mean":
            probs = sum(_softmax(s.run(None, {self._input: x})[0]) for s in self._sessions) / len(self._sessions)
        else:
            draws = np.array([secrets.randbelow(len(self._sessions)) for _ in range(n)])
            probs = np.empty((n, self._classes), dtype=np.float32)
            for member in np.unique(draws):
                rows = np.flatnonzero(draws == member)
                probs[rows] = _softmax(self._sessions[member].run(None, {self._input: x[rows]})[0])
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output("probabilities", probs.astype(np.float32, copy=False))],
        )
