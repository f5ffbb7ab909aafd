"""Summarise the detector's offline evaluation and plot detection and false positives against the
match threshold (reports/detection.md).

    .venv/bin/python bench/detect/plot.py --attacks attacks.json --benign benign.json \
        --png reports/detection-threshold.png --markdown summary.md

Both JSON files come from `node dist/bench/detect/evaluate.js attacks|benign` (bench/detect/evaluate.ts).
Nothing is decided here: for every query the evaluator wrote `flaggedUpTo`, the highest threshold at
which the detector's own rule (`flagOf` in src/detect/detector.ts) flags it, 0 for none.
"""
from __future__ import annotations

import argparse
import json
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def flagged(up_to: int, threshold: int) -> bool:
    """The evaluator's decision for a query at `threshold` (flagged at every threshold up to `up_to`)."""
    return threshold <= up_to


def first_flag(decisions: list[int], threshold: int) -> int | None:
    for i, up_to in enumerate(decisions):
        if flagged(up_to, threshold):
            return i + 1
    return None


def attack_rows(attacks: dict, threshold: int) -> list[dict]:
    rows = []
    kinds = sorted({r["attack"] for r in attacks["runs"]}, key=lambda k: [
        "square", "square-eot4", "hsj", "square-adaptive", "square-eot4-adaptive", "hsj-adaptive", "square-sybil"].index(k))
    for kind in kinds:
        runs = [r for r in attacks["runs"] if r["attack"] == kind]
        firsts = [first_flag(r["flaggedUpTo"], threshold) for r in runs]
        hits = [f for f in firsts if f is not None]
        flagged_requests = [sum(flagged(u, threshold) for u in r["flaggedUpTo"]) for r in runs]
        rows.append({
            "attack": kind, "runs": len(runs), "detected": len(hits),
            "median": statistics.median(hits) if hits else None, "max": max(hits) if hits else None,
            "verified": sum(r["verified"] for r in runs),
            "before_detection": sum(1 for r, f in zip(runs, firsts) if r["stop"] == "success" and r["verified"]
                                    and (f is None or f > r["requests"])),
            "requests": sum(r["requests"] for r in runs),
            "refused": sum(r["refused"] for r in runs),
            "flagged_share": sum(flagged_requests) / max(1, sum(len(r["obs"]) for r in runs)),
            "gave_up": sum(r["gaveUp"] for r in runs),
        })
    return rows


def benign_rows(benign: dict, threshold: int) -> list[dict]:
    rows = []
    for s in benign["streams"]:
        flags = [flagged(u, threshold) for u in s["flaggedUpTo"]]
        clients_flagged = {c for c, f in zip(s["clientOf"], flags) if f}
        rows.append({"stream": s["name"], "queries": s["queries"], "flagged": sum(flags),
                     "clients": s["clients"], "clients_flagged": len(clients_flagged)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attacks", required=True)
    p.add_argument("--benign", required=True)
    p.add_argument("--threshold", type=int, default=None, help="the row threshold (default: the run's)")
    p.add_argument("--png")
    p.add_argument("--markdown")
    a = p.parse_args()
    attacks = json.load(open(a.attacks))
    benign = json.load(open(a.benign))
    hashes = attacks["settings"]["hashes"]
    threshold = a.threshold or attacks["settings"]["threshold"]

    out = [f"threshold {threshold} of {hashes} hashes (quant step {attacks['settings']['quantStep']}, "
           f"window {attacks['settings']['window']}, history {attacks['settings']['history']}, "
           f"re-uploads allowed {attacks['settings']['repeats']})", ""]
    out += ["| attack | runs | detected | median / max first flagged request | verified success | "
            "verified success before detection | requests | refused | flagged share of requests |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in attack_rows(attacks, threshold):
        out.append(f"| {r['attack']} | {r['runs']} | {r['detected']}/{r['runs']} | {r['median']} / {r['max']} | "
                   f"{r['verified']}/{r['runs']} | {r['before_detection']}/{r['runs']} | {r['requests']} | {r['refused']} | "
                   f"{100 * r['flagged_share']:.1f}% |")
    out += ["", "| benign stream | queries | flagged queries | per 10k | clients | clients flagged |", "|---|---|---|---|---|---|"]
    for r in benign_rows(benign, threshold):
        out.append(f"| {r['stream']} | {r['queries']} | {r['flagged']} | {1e4 * r['flagged'] / r['queries']:.1f} | "
                   f"{r['clients']} | {r['clients_flagged']} |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.markdown:
        open(a.markdown, "w").write(text)

    if a.png:
        thresholds = list(range(1, hashes + 1))
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for kind in ["square", "square-eot4", "hsj", "square-adaptive", "square-eot4-adaptive", "hsj-adaptive", "square-sybil"]:
            if not any(r["attack"] == kind for r in attacks["runs"]):
                continue
            rates = []
            for t in thresholds:
                row = [r for r in attack_rows(attacks, t) if r["attack"] == kind][0]
                rates.append(row["detected"] / row["runs"])
            ax[0].plot(thresholds, rates, label=kind, linestyle="--" if "adaptive" in kind else "-")
        ax[0].axvline(threshold, color="grey", lw=0.8)
        ax[0].set_xlabel("match threshold (shared hashes)")
        ax[0].set_ylabel("attack runs detected")
        ax[0].set_title("detection rate")
        ax[0].legend(fontsize=8)
        for s in benign["streams"]:
            fp = [1e4 * sum(flagged(u, t) for u in s["flaggedUpTo"]) / s["queries"] for t in thresholds]
            ax[1].plot(thresholds, [max(v, 0.1) for v in fp], label=s["name"][:48])
        ax[1].axvline(threshold, color="grey", lw=0.8)
        ax[1].axhline(1, color="red", lw=0.8, linestyle=":")
        ax[1].set_yscale("log")
        ax[1].set_xlabel("match threshold (shared hashes)")
        ax[1].set_ylabel("flagged benign queries per 10k (0 drawn at 0.1)")
        ax[1].set_title("false positives")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
