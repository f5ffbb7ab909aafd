"""The floor of a Python peer: the same members and draw as app.py (members.py), behind a bare ASGI
callable under the same uvicorn workers, without FastAPI's routing and pydantic's validation:
json.loads in, json.dumps out. Started by bench/servers.ts through bench/peer/serve.py --app raw:app.

    REDSERVE_PEER_MODEL=models/fmnist-red .venv/bin/python bench/peer/serve.py --app raw:app --port 8500 --workers 2
"""
from __future__ import annotations

import json

import numpy as np

from members import classify, problem, response

INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"


async def _send(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "GET" and path == "/v2/health/ready":
        return await _send(send, 200, {})
    if scope["method"] != "POST" or not (path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX)):
        return await _send(send, 404, {"error": "not found"})
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        request = json.loads(b"".join(chunks))
        tensor = request["inputs"][0]
        bad = problem(tensor["name"], tensor["datatype"], tensor["shape"])
        if bad:
            return await _send(send, 400, {"error": bad})
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return await _send(send, 400, {"error": f"bad request: {e}"})
    name = path[len(INFER_PREFIX):-len(INFER_SUFFIX)]
    await _send(send, 200, response(name, request.get("id"), classify(x)))
