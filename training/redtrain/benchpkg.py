"""Benchmark packages: real member architectures with seeded random weights (docs/model-format.md).

Serving cost depends on the members' size, not on what they learned, so a benchmark needs packages
of the paper's architectures without a CIFAR-10 training run. Such a package is marked
`benchmark.randomWeights` and carries no `evaluation`; everything else is what `export` writes.

Steps:
  1. build member i under torch.manual_seed of a seed derived from (seed, i), and set its
     batch-norm statistics from one batch of uniform noise;
  2. export every member to ONNX (opset 17, dynamic batch axis) in a temporary sibling folder and
     check it against PyTorch with onnxruntime;
  3. write golden images (seeded noise) and every member's logits on them;
  4. write manifest.json and validate the whole package against the format;
  5. swap the temporary folder into place.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from redtrain.errors import UserError
from redtrain.export import GOLDEN_ATOL, PARITY_ATOL, check_parity, export_record, finish_package
from redtrain.golden import GOLDEN_IMAGES, write_golden
from redtrain.manifest import check_package, sha256_file
from redtrain.models import ResNet18, ResNet20, count_parameters
from redtrain.onnx_export import export_onnx
from redtrain.provenance import git_commit, staging_folder

ARCHS: dict[str, type[nn.Module]] = {"resnet20": ResNet20, "resnet18": ResNet18}
# Images whose batch statistics become each member's batch-norm running statistics.
CALIBRATION_IMAGES = 16
# ResNet-18 halves the resolution three times: below 8 pixels its later stages run on 1x1 maps.
MIN_SIDE, MAX_SIDE = 8, 1024


@dataclass(frozen=True)
class BenchSpec:
    arch: str
    members: int
    seed: int
    shape: tuple[int, int, int]
    classes: int = 10

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"--arch: '{self.arch}' is not one of {', '.join(ARCHS)}")
        if self.members < 1:
            problems.append(f"--members: {self.members} must be at least 1")
        if self.seed < 0:
            problems.append(f"--seed: {self.seed} must be at least 0")
        if self.classes < 2:
            problems.append(f"--classes: {self.classes} must be at least 2")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def name(self) -> str:
        return f"bench-{self.arch}x{self.members}"


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32): C is 1 (gray) or 3 (rgb), H and W in [MIN_SIDE, MAX_SIDE]."""
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    c, h, w = (int(g) for g in m.groups()) if m else (0, 0, 0)
    if not (m and c in (1, 3) and MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise UserError(f"--input: expected CxHxW with C 1 (gray) or 3 (rgb) and H, W in [{MIN_SIDE}, {MAX_SIDE}], "
                        f"got '{text}'")
    return c, h, w


def member_seed(seed: int, index: int) -> int:
    """Member i's torch seed: distinct for every (seed, i), so packages with different seeds share no
    member, while member i is the same in any package of that seed whatever its size."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_member(spec: BenchSpec, index: int) -> nn.Module:
    """Member `index`: PyTorch's default initialisation under its seed, then batch-norm statistics
    from one batch of uniform noise. With the defaults (mean 0, variance 1) every batch norm is the
    identity and activations shrink layer after layer; measured statistics give them, and the
    logits, the scale of a trained network's. Returned in eval mode."""
    seed = member_seed(spec.seed, index)
    torch.manual_seed(seed)
    module = ARCHS[spec.arch](classes=spec.classes, in_channels=spec.shape[0])
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.momentum = None  # a cumulative average: after one batch, exactly that batch's statistics
    noise = torch.rand(CALIBRATION_IMAGES, *spec.shape, generator=torch.Generator().manual_seed(seed))
    module.train()
    with torch.no_grad():
        module(noise)
    for bn in norms:
        bn.momentum = 0.1
    return module.eval()


def _golden_pixels(spec: BenchSpec) -> np.ndarray:
    """GOLDEN_IMAGES seeded noise images, uint8 [n, C, H, W]."""
    return np.random.default_rng(spec.seed).integers(0, 256, (GOLDEN_IMAGES, *spec.shape), dtype=np.uint8)


def _manifest(spec: BenchSpec, entries: list[dict], golden_sha256: str) -> dict:
    c = spec.shape[0]
    return {
        "format": "redserve-package",
        "formatVersion": 1,
        "name": spec.name,
        "version": "1.0.0",
        "kind": "ensemble",
        "description": f"benchmark: {spec.members} {spec.arch} members with seeded random weights (seed {spec.seed}); "
                       "not a classifier",
        "input": {"name": "input", "shape": list(spec.shape), "channels": "gray" if c == 1 else "rgb",
                  "scale": 1 / 255, "mean": [0.0] * c, "std": [1.0] * c,
                  "resize": {"fit": "contain", "kernel": "linear", "background": 0}},
        "output": {"name": "logits", "classes": spec.classes},
        "labels": [f"class-{k}" for k in range(spec.classes)],
        "members": entries,
        "golden": {"file": "golden.json", "sha256": golden_sha256, "atol": GOLDEN_ATOL},
        "training": {"method": "random-weights", "seed": spec.seed, "dataset": "none", "commit": git_commit(),
                     "arch": spec.arch,
                     "init": "PyTorch's default initialisation under torch.manual_seed(memberSeeds[i]); batch-norm "
                             f"statistics of {CALIBRATION_IMAGES} uniform-noise images",
                     "memberSeeds": [member_seed(spec.seed, i) for i in range(spec.members)]},
        "benchmark": {"randomWeights": True, "arch": spec.arch, "seed": spec.seed},
        "export": export_record(),
    }


def _same_spec(manifest: dict, spec: BenchSpec) -> bool:
    bench = manifest.get("benchmark") or {}
    return (bench.get("arch") == spec.arch and bench.get("seed") == spec.seed
            and len(manifest.get("members", [])) == spec.members
            and manifest.get("input", {}).get("shape") == list(spec.shape)
            and manifest.get("output", {}).get("classes") == spec.classes)


def _existing(out: Path) -> dict | None:
    """The benchmark manifest at `out`, or None when there is nothing there to keep; refuses a
    folder that holds anything but a benchmark package."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a package folder; refusing to overwrite it")
    path = out / "manifest.json"
    if not path.is_file():
        if any(out.iterdir()):
            raise UserError(f"--out {out} is a non-empty folder without manifest.json; refusing to overwrite it")
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        manifest = None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("benchmark"), dict)
            and manifest["benchmark"].get("randomWeights") is True):
        raise UserError(f"--out {out} holds a model package that is not a benchmark package "
                        "(no benchmark.randomWeights in its manifest); refusing to overwrite it")
    return manifest


def write_bench_package(spec: BenchSpec, out: str | Path, *, force: bool = False) -> tuple[dict, bool]:
    """Write the package to `out`; returns its manifest and whether it was written: not when `out`
    already holds a valid benchmark package of the same spec (unless `force`)."""
    out = Path(out)
    existing = _existing(out)
    if existing is not None and not force and _same_spec(existing, spec):
        try:
            return check_package(out), False
        except UserError:
            pass  # damaged: rebuilt below
    tmp = staging_folder(out)
    try:
        members = [build_member(spec, i) for i in range(spec.members)]
        pixels = _golden_pixels(spec)
        x = torch.from_numpy(pixels).float() / 255
        write_golden(tmp, pixels, x, members)
        probe = torch.cat([x, torch.rand(4, *spec.shape, generator=torch.Generator().manual_seed(spec.seed))])
        entries = []
        for i, module in enumerate(members):
            path = tmp / f"member-{i}.onnx"
            export_onnx(module, spec.shape, path)
            check_parity(module, path, probe, f"member {i}", PARITY_ATOL)
            entries.append({"file": path.name, "sha256": sha256_file(path), "parameters": count_parameters(module)})
        manifest = _manifest(spec, entries, sha256_file(tmp / "golden.json"))
        finish_package(tmp, out, manifest)
        return manifest, True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
