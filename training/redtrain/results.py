"""Names of the attack entries in robustness.json that other modules look up.

`redtrain evaluate` writes one entry per attack under `attacks`, keyed by its display label; the
report, the paired comparison and the study read these two back, so the labels live here once.
"""

ADAPTIVE = "adaptive (worst of the above, per example)"
# The worst case before ARC, the clamped margin, APGD-T, per-member attacks and restarts were added;
# reported beside the full worst case so one sees what the new attacks found.
BASE_WORST = "worst of PGD, APGD-CE, APGD-DLR (first starts)"
