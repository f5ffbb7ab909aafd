"""Start the peer (app.py, or raw.py) with N uvicorn worker processes, each with a listener of its
own on the same port (SO_REUSEPORT), so that the kernel spreads connections over the workers.

Why not `uvicorn --workers N`, which shares one listener between the workers:
- Keep-alive connections stay with the worker that accepted them, and with one shared listener
  whichever worker wakes first can accept all of a benchmark's connections: the raw ASGI peer kept
  1.00 of 2 cores busy on ResNet-18 at 4 and 16 clients in the sweep of 2026-12-07, and on ResNet-20
  at 4 to 64 clients in the first sweep of 2026-12-08 (FastAPI 1.19-1.20 there at 4 and 16). A listener per worker makes the kernel hash each new connection
  to one of them. Every worker binds first and only then do they all listen (a barrier), so that no
  connection reaches the first worker alone while the others are still loading their members.
- uvicorn 0.54's multi-worker path binds its listener with protocol 0, accepted sockets inherit it,
  and asyncio then leaves Nagle's algorithm on: every keep-alive response after the first waits
  about 40 ms for the client's delayed ACK (Kludex/uvicorn#3149, open when this was written;
  measured here: 47 ms p50 per request with --workers 2, 2.3 ms with --workers 1). These listeners
  are created with IPPROTO_TCP, so asyncio sets TCP_NODELAY on each connection.

    REDSERVE_PEER_MODEL=models/fmnist-red .venv/bin/python bench/peer/serve.py --port 8500 --workers 2
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import multiprocessing
import multiprocessing.connection
import pathlib
import signal
import socket
import sys

import uvicorn

APP_DIR = pathlib.Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def port_is_free(host: str, port: int) -> bool:
    """SO_REUSEPORT would let a stale server on the port share it silently: bind once without it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def listener(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker(app_ref: str, host: str, port: int, bound: multiprocessing.synchronize.Barrier) -> None:
    # Forked after the parent set its handlers: uvicorn restores these on shutdown and re-raises the
    # signal, which would run the parent's stop() here. And die with the parent, even a SIGKILLed one.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    sys.path.insert(0, str(APP_DIR))  # uvicorn's --app-dir
    module, attribute = app_ref.split(":")
    app = getattr(importlib.import_module(module), attribute)  # loads the members
    sock = listener(host, port)
    bound.wait(timeout=600)  # a worker that never binds breaks the barrier: every worker exits
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])  # listens on sock, serves until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(description="serve bench/peer/app.py with N uvicorn workers, a listener each")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--app", default="app:app", help="the ASGI app: app:app (FastAPI) or raw:app (bare ASGI)")
    args = parser.parse_args()
    if not port_is_free(args.host, args.port):
        sys.exit(f"serve.py: {args.host}:{args.port} is in use")
    bound = multiprocessing.Barrier(args.workers)
    workers = [multiprocessing.Process(target=worker, args=(args.app, args.host, args.port, bound), daemon=True)
               for _ in range(args.workers)]

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.is_alive():
                w.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.start()
    # The first worker to exit takes the others with it: a peer with a dead worker is not measured.
    multiprocessing.connection.wait([w.sentinel for w in workers])
    failed = not stopping
    stop()
    for w in workers:
        w.join()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
