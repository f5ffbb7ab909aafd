"""How much two sweeps of the same build differ: for every redserve row at concurrency 1 and 16 that
both bench.json files hold, images/s and event-loop µs per image side by side, with the relative
difference, then the median and largest difference. A ratio closer to its target than this spread
is not a result.

    python3 bench/tools/sweep-spread.py OLD/bench.json NEW/bench.json
    python3 bench/tools/sweep-spread.py <(git show REV:reports/bench.json) reports/bench.json
"""

import json
import statistics
import sys


def points(path: str) -> dict:
    with open(path) as f:
        return {(p["workload"], p["target"], p["concurrency"]): p for p in json.load(f)["points"]}


def main() -> None:
    a, b = points(sys.argv[1]), points(sys.argv[2])
    diffs = []
    for key in sorted(set(a) & set(b)):
        workload, target, c = key
        if not target.startswith("redserve") or "overload" in target or c not in (1, 16):
            continue
        ra, rb = a[key]["rps"], b[key]["rps"]
        la = (a[key].get("cpu") or {}).get("mainThreadUsPerImage")
        lb = (b[key].get("cpu") or {}).get("mainThreadUsPerImage")
        d = abs(rb - ra) / max(ra, rb)
        diffs.append(d)
        loop = f"{la:.0f} -> {lb:.0f}" if la and lb else "-"
        print(f"{workload:9} {target:26} c={c:<3} images/s {ra:8.0f} -> {rb:8.0f} ({d:4.0%})  event loop µs {loop}")
    if diffs:
        print(f"{len(diffs)} rows: images/s differ by a median {statistics.median(diffs):.0%}, at most {max(diffs):.0%}")


if __name__ == "__main__":
    main()
