"""Start the peer (app.py) with N uvicorn worker processes, as `uvicorn --workers N` would, minus one
known defect: uvicorn 0.54's multi-worker path binds its listener with protocol 0, accepted sockets
inherit it, and asyncio then leaves Nagle's algorithm on; every keep-alive response after the first
waits about 40 ms for the client's delayed ACK (Kludex/uvicorn#3149, open when this was written;
measured here: 47 ms p50 per request with --workers 2, 2.3 ms with --workers 1). A user tuning the
peer would work around it, so the benchmark does: the listener is created with IPPROTO_TCP and
handed to uvicorn's own supervisor.

    REDSERVE_PEER_MODEL=models/fmnist-red .venv/bin/python bench/peer/serve.py --port 8500 --workers 2
"""

from __future__ import annotations

import argparse
import pathlib
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess


def main() -> None:
    parser = argparse.ArgumentParser(description="serve bench/peer/app.py with N uvicorn workers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--app", default="app:app", help="the ASGI app: app:app (FastAPI) or raw:app (bare ASGI)")
    args = parser.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # uvicorn's --app-dir
    config = uvicorn.Config(args.app, host=args.host, port=args.port, workers=args.workers, log_level="warning",
                            access_log=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
