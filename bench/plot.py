"""Plot one workload of bench.json (written by bench/sweep.ts): throughput and p99 latency against
concurrency, one line per target.

    .venv/bin/python bench/plot.py reports/bench.json resnet18 reports/bench-resnet18.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, workload: str, out: str) -> None:
    points = [
        p
        for p in json.load(open(src))["points"]
        if p["workload"] == workload and not p["target"].endswith("overload)")
    ]
    if not points:
        raise SystemExit(f"{src}: no points for workload '{workload}'")
    targets = list(dict.fromkeys(p["target"] for p in points))
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in targets:
        rows = sorted((p for p in points if p["target"] == target), key=lambda p: p["concurrency"])
        cs = [p["concurrency"] for p in rows]
        style = "--" if target.startswith("raw batched") or target.startswith("bare") else "-"
        ax_t.plot(cs, [p["rps"] for p in rows], style, marker="o", label=target)
        ax_l.plot(cs, [p["p99"] for p in rows], style, marker="o", label=target)
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
    ax_t.set_ylabel("images / s")
    ax_t.set_title(f"{workload}: throughput")
    ax_l.set_yscale("log")
    ax_l.set_ylabel("p99 latency, ms")
    ax_l.set_title(f"{workload}: p99 latency (raw: one batch run)")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
