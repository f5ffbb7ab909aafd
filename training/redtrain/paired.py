"""Paired comparison of two evaluations on the same test images.

    python -m redtrain compare runs/study/eval/at-s0/robustness.json#study-at-s0 \\
        runs/study/eval/at-strong-s0/robustness.json#study-at-strong-s0

Two packages evaluated on the same first N test images (same eps, attack steps and seed) differ per
image: the adaptive expected accuracy of one image is the fraction of members the worst attack left
correct, weighted by their sampling probabilities (`accuracyPerImage` in robustness.json; older files
have only `correctMembers`, divided by the member count). The difference of the two
means is a paired statistic, and its 95% interval comes from resampling images with replacement
(percentile bootstrap). It says how much of a difference the choice of images alone could make; the
spread between training seeds is a separate question that only more seeds answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from redtrain.errors import UserError
from redtrain.results import ADAPTIVE

# Settings that change what the adaptive figure measures; two evaluations must agree on all of them.
_SAME = ("eps", "limit", "apgd_steps", "pgd_steps", "seed")


@dataclass(frozen=True)
class Scored:
    label: str
    accuracy: torch.Tensor  # per image, in [0, 1]
    settings: dict
    dataset: str


def load_scored(ref: str) -> Scored:
    """`FILE#TARGET`: a robustness.json and one of its results, by name or spec (optional when it has one)."""
    path, _, wanted = ref.partition("#")
    try:
        report = json.loads(Path(path).read_text())
        results, meta = report["results"], report["meta"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a robustness.json written by redtrain evaluate ({err})") from None
    if wanted:
        chosen = [r for r in results if wanted in (r.get("name"), r.get("spec"))]
    else:
        chosen = results if len(results) == 1 else []
    if len(chosen) != 1:
        names = ", ".join(repr(r.get("name")) for r in results)
        raise UserError(f"{ref}: name one target after '#' (this file has: {names})")
    result = chosen[0]
    adaptive = result.get("attacks", {}).get(ADAPTIVE, {})
    counts = adaptive.get("correctMembers")
    if counts is None:
        raise UserError(f"{ref}: no per-image results (evaluated before `correctMembers` was recorded; "
                        f"evaluate it again)")
    if "accuracyPerImage" in adaptive:  # weighted by the sampling probabilities
        accuracy = torch.tensor(adaptive["accuracyPerImage"], dtype=torch.float64)
    else:
        accuracy = torch.tensor(counts, dtype=torch.float64) / result["members"]
    return Scored(result["name"], accuracy, meta["settings"], meta.get("dataset", ""))


def paired_difference(a: Scored, b: Scored, samples: int = 10000, seed: int = 0) -> dict:
    """Mean of b minus mean of a over the same images, with a 95% percentile bootstrap interval."""
    if a.accuracy.shape != b.accuracy.shape:
        raise UserError(f"'{a.label}' has {a.accuracy.numel()} images and '{b.label}' {b.accuracy.numel()}: "
                        f"a paired comparison needs the same images")
    differ = [k for k in _SAME if a.settings.get(k) != b.settings.get(k)]
    if a.dataset != b.dataset:
        differ.append("dataset")
    if differ:
        raise UserError(f"'{a.label}' and '{b.label}' were evaluated with different settings ({', '.join(differ)})")
    if samples < 100:
        raise UserError("--samples must be at least 100")
    diff = b.accuracy - a.accuracy
    n = diff.numel()
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(samples, dtype=torch.float64)
    for start in range(0, samples, 1000):  # chunks keep memory at 1000 x n indices
        stop = min(start + 1000, samples)
        index = torch.randint(0, n, (stop - start, n), generator=generator)
        means[start:stop] = diff[index].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"a": a.label, "b": b.label, "images": n, "meanA": float(a.accuracy.mean()),
            "meanB": float(b.accuracy.mean()), "difference": float(diff.mean()), "low": low, "high": high,
            "samples": samples, "seed": seed}


def describe(r: dict) -> str:
    return (f"{r['b']} minus {r['a']} on {r['images']} images: {100 * r['difference']:+.2f} points "
            f"({100 * r['meanB']:.2f} against {100 * r['meanA']:.2f}), 95% bootstrap interval "
            f"{100 * r['low']:+.2f} to {100 * r['high']:+.2f} ({r['samples']} resamples of the images)")
