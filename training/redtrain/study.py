"""A multi-seed study as one resumable command: train every arm and seed, export, evaluate, report.

    python -m redtrain study --plan training/configs/experiments/study.yaml --jobs 2

The plan (YAML) names the arms (a config each), the seeds, the evaluation settings and where the
report goes. For every arm and seed the runner:
  1. writes the arm's config with that seed into the run folder's sibling `<run>.yaml`;
  2. trains it (`redtrain train`, which resumes an unfinished run from its last epoch);
  3. exports it to `<runs>/pkg/<run>` (skipped when the package is newer than the checkpoint);
  4. evaluates the package and its member 0 alone (`redtrain evaluate --reuse`) into `<runs>/eval/<run>`;
and, once any run is evaluated, writes the report from every evaluated run (a table of mean and
range over seeds, and one plot). Interrupt it at any point and run the same command again: finished
steps are skipped and the unfinished training run resumes.

The report's `results.json` is the study's durable record: `<runs>` (checkpoints, packages) is never
committed, so a run recorded there is kept in the report and not retrained on a fresh checkout
(pass `--redo NAME` to train it again).

Runs execute as separate processes, `--jobs` at a time (one torch thread each), seed-major, so a
partial study has every arm's first seed before any arm's second.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from redtrain.config import load_config
from redtrain.errors import UserError
from redtrain.provenance import write_text_atomic
from redtrain.study_report import recorded, write_report


@dataclass(frozen=True)
class Arm:
    name: str
    config: str
    label: str
    # Why the arm was stopped (evidence in the report); its runs are skipped unless --only/--redo names them.
    stopped: str = ""


@dataclass(frozen=True)
class Plan:
    title: str
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    runs: str
    report: str
    eval_limit: int
    eval_args: tuple[str, ...]

    def run_names(self) -> list[tuple[Arm, int, str]]:
        return [(arm, seed, f"{arm.name}-s{seed}") for seed in self.seeds for arm in self.arms]


PLAN_KEYS = {"title", "arms", "seeds", "runs", "report", "eval"}
EVAL_KEYS = {"limit", "args"}
ARM_KEYS = {"name", "config", "label", "stopped"}


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study plan not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    problems = [f"unknown key '{k}' (allowed: {', '.join(sorted(PLAN_KEYS))})" for k in sorted(set(raw) - PLAN_KEYS)]
    arms = []
    for i, a in enumerate(raw.get("arms") or []):
        if not isinstance(a, dict) or not {"name", "config"} <= set(a):
            problems.append(f"arms[{i}]: needs name and config")
            continue
        problems += [f"arms[{i}]: unknown key '{k}' (allowed: {', '.join(sorted(ARM_KEYS))})"
                     for k in sorted(set(a) - ARM_KEYS)]
        if "stopped" in a and not (isinstance(a["stopped"], str) and a["stopped"].strip()):
            problems.append(f"arms[{i}].stopped: expected the reason as text, got {a['stopped']!r}")
        if not Path(a["config"]).is_file():
            problems.append(f"arms[{i}].config: {a['config']} not found")
        arms.append(Arm(str(a["name"]), str(a["config"]), str(a.get("label", a["name"])),
                        str(a.get("stopped", "")).strip()))
    if not arms:
        problems.append("arms: at least one arm is needed")
    if len({a.name for a in arms}) != len(arms):
        problems.append("arms: names must be unique")
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.append(f"seeds: expected a non-empty list of integers, got {seeds!r}")
        seeds = [0]
    ev = raw.get("eval") or {}
    problems += [f"eval: unknown key '{k}' (allowed: {', '.join(sorted(EVAL_KEYS))})" for k in sorted(set(ev) - EVAL_KEYS)]
    limit = ev.get("limit", 1000)
    if not isinstance(limit, int) or limit < 1:
        problems.append(f"eval.limit: expected a positive integer, got {limit!r}")
    if problems:
        raise UserError(f"study plan {path}: " + "; ".join(problems))
    return Plan(str(raw.get("title", path.stem)), tuple(arms), tuple(seeds), str(raw.get("runs", f"runs/{path.stem}")),
                str(raw.get("report", f"reports/{path.stem}.md")), limit, tuple(str(x) for x in ev.get("args", [])))


def _redtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "redtrain", *args]


def _run_logged(cmd: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}\n")
        fh.flush()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise UserError(f"{' '.join(cmd[2:4])} failed (exit {done.returncode}); see {log}")


def _run_one(plan: Plan, arm: Arm, seed: int, name: str, stages: set[str]) -> str:
    runs = Path(plan.runs)
    run_dir, pkg, ev = runs / name, runs / "pkg" / name, runs / "eval" / name
    log = runs / f"{name}.log"
    cfg = load_config(arm.config)
    cfg = dataclasses.replace(cfg, seed=seed, name=f"{cfg.name}-s{seed}", threads=1)
    cfg_path = runs / f"{name}.yaml"
    if not cfg_path.exists():
        write_text_atomic(cfg_path, cfg.to_yaml())
    if "train" in stages and not (run_dir / "summary.json").exists():
        _run_logged(_redtrain("train", "--config", str(cfg_path), "--out", str(run_dir), "--quiet"), log)
    if not (run_dir / "summary.json").exists():
        return f"{name}: not trained"
    checkpoint = run_dir / "checkpoint.pt"
    manifest = pkg / "manifest.json"
    if "export" in stages and (not manifest.exists() or manifest.stat().st_mtime < checkpoint.stat().st_mtime):
        _run_logged(_redtrain("export", "--run", str(run_dir), "--out", str(pkg)), log)
    if not manifest.exists():
        return f"{name}: trained, not exported"
    if "evaluate" in stages:
        ev.mkdir(parents=True, exist_ok=True)
        _run_logged(_redtrain("evaluate", "--package", str(pkg), "--package", f"{pkg}:0", "--limit", str(plan.eval_limit),
                              "--threads", "1", "--out", str(ev), "--reuse", "--quiet", *plan.eval_args), log)
    return f"{name}: {'evaluated' if (ev / 'robustness.json').exists() else 'exported'}"


def run_study(plan_path: str, jobs: int, stages: set[str], only: set[str] | None, progress: bool = True,
              redo: set[str] | None = None) -> Path | None:
    """Run the plan's runs (all, or those whose arm or run name is in `only`), `jobs` at a time.
    Runs already recorded in results.json are skipped unless named in `redo`."""
    plan = load_plan(plan_path)
    Path(plan.runs).mkdir(parents=True, exist_ok=True)
    command = f"python -m redtrain study --plan {plan_path}"
    names = {name for _, _, name in plan.run_names()} | {arm.name for arm in plan.arms}
    unknown = sorted((only or set()) - names) + sorted((redo or set()) - names)
    if unknown:
        raise UserError(f"no arm or run named {', '.join(unknown)} in {plan_path} (runs: "
                        f"{', '.join(name for _, _, name in plan.run_names())})")
    done = set(recorded(plan)) - (redo or set())
    named = (only or set()) | (redo or set())
    selected = [(arm, seed, name) for arm, seed, name in plan.run_names()
                if (not only or arm.name in only or name in only)
                and (not arm.stopped or arm.name in named or name in named)]
    # A recorded run is skipped unless this checkout evaluated it (then the report refreshes from it).
    skipped = {name for _, _, name in selected
               if name in done and not (Path(plan.runs) / "eval" / name / "robustness.json").exists()}
    todo = [run for run in selected if run[2] not in skipped]
    if progress:
        for arm in plan.arms:
            if arm.stopped and not only and not any(a is arm for a, _, _ in selected):
                print(f"{arm.name}: stopped ({arm.stopped}); --only {arm.name} runs it anyway")
        for name in sorted(skipped):
            print(f"{name}: recorded in {Path(plan.report).with_suffix('.json')}, not retrained (--redo {name} to retrain)")
    started = time.time()

    def one(item: tuple[Arm, int, str]) -> str:
        arm, seed, name = item
        try:
            status = _run_one(plan, arm, seed, name, stages)
        except UserError as exc:
            status = f"{name}: FAILED: {exc}"
        if progress:
            print(f"[{time.time() - started:7.0f} s] {status}", flush=True)
        if "report" in stages:
            write_report(plan, command)
        return status

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        statuses = list(pool.map(one, todo))
    failed = [s for s in statuses if "FAILED" in s]
    path = write_report(plan, command) if "report" in stages else None
    if failed:
        raise UserError("; ".join(failed))
    return path
