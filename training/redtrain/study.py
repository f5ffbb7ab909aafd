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
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from redtrain.config import load_config
from redtrain.errors import UserError


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
        tmp = cfg_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False))
        os.replace(tmp, cfg_path)
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


# --- the report --------------------------------------------------------------------------------------

def _mean_offdiag(matrix: list[list[float]]) -> float:
    n = len(matrix)
    values = [matrix[i][j] for i in range(n) for j in range(n) if i != j]
    return sum(values) / len(values) if values else float("nan")


def recorded(plan: Plan) -> dict[str, dict]:
    """Records of runs already in the report's results.json (from earlier checkouts), by run name."""
    path = Path(plan.report).with_suffix(".json")
    if not path.is_file():
        return {}
    return {r["run"]: r for r in json.loads(path.read_text()).get("runs", [])}


def collect(plan: Plan) -> list[dict]:
    """One record per evaluated run: the figures the report tabulates (fractions, not percent).
    A run evaluated under `<runs>` wins; otherwise its record in results.json is kept."""
    records = []
    earlier = recorded(plan)
    for arm, seed, name in plan.run_names():
        path = Path(plan.runs) / "eval" / name / "robustness.json"
        summary_path = Path(plan.runs) / name / "summary.json"
        if not path.exists() or not summary_path.exists():
            if name in earlier:
                records.append(earlier[name])
            continue
        evaluation = json.loads(path.read_text())
        results = evaluation["results"]
        package = next(r for r in results if not r["spec"].endswith(":0"))
        member = next(r for r in results if r["spec"].endswith(":0"))
        attacks = package["attacks"]
        ensemble = min(a["ensemble"] for k, a in attacks.items() if "ensemble" in a)
        summary = json.loads(summary_path.read_text())
        records.append({
            "arm": arm.name, "seed": seed, "run": name,
            "clean": package["clean"]["expected"],
            "adaptive": attacks["adaptive (worst of the above, per example)"]["expected"],
            "ensemble": ensemble,
            "member": member["attacks"]["adaptive (worst of the above, per example)"]["expected"],
            "transfer": _mean_offdiag(package["transfer"]),
            "cosine": package["clean"].get("gradientCosine"),
            "weak": package["weak"]["accuracy"],
            "trainSeconds": summary["seconds"],
            "examples": evaluation["meta"]["examples"],
        })
    return records


COLUMNS = (("clean", "clean, random draw"), ("adaptive", "adaptive, random draw"),
           ("ensemble", "averaged ensemble (worst over attacks)"), ("member", "member 0 alone, adaptive"),
           ("transfer", "member transfer"), ("cosine", "gradient cosine"), ("weak", "weak protocol"))


def _cell(values: list[float], pct: bool = True) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    scale = 100.0 if pct else 1.0
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f}" if pct else f"{mean:.3f}"
    lo, hi = min(values) * scale, max(values) * scale
    return f"{mean:.1f} ({lo:.1f}-{hi:.1f})" if pct else f"{mean:.3f} ({lo:.3f}-{hi:.3f})"


def render(plan: Plan, records: list[dict], command: str) -> str:
    by_arm: dict[str, list[dict]] = {}
    for r in records:
        by_arm.setdefault(r["arm"], []).append(r)
    lines = [f"| arm | seeds | {' | '.join(label for _, label in COLUMNS)} | train time per run |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for arm in plan.arms:
        rows = by_arm.get(arm.name, [])
        if not rows:
            lines.append(f"| {arm.label} | {'stopped: ' + arm.stopped if arm.stopped else 'none yet'} |"
                         + " - |" * len(COLUMNS) + " - |")
            continue
        cells = [_cell([r[k] for r in rows], pct=k != "cosine") for k, _ in COLUMNS]
        minutes = [r["trainSeconds"] / 60 for r in rows]
        lines.append(f"| {arm.label} | {', '.join(str(r['seed']) for r in rows)} | {' | '.join(cells)} | "
                     f"{statistics.mean(minutes):.0f} min ({min(minutes):.0f}-{max(minutes):.0f}) |")
    examples = sorted({r["examples"] for r in records})
    head = [f"Figures: mean over seeds (range in brackets), percent of the first {', '.join(map(str, examples))} "
            "test images; gradient cosine as a fraction. Generated by "
            f"`{command}`.", ""]
    return "\n".join(head + lines) + "\n"


def plot(plan: Plan, records: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, arm in enumerate(plan.arms):
        rows = [r for r in records if r["arm"] == arm.name]
        if arm.stopped and not rows:
            ax.annotate("stopped\n(see report)", (i, 0.05), xycoords=("data", "axes fraction"), ha="center",
                        fontsize=7, color="0.4")
        for key, marker, colour, dx in (("adaptive", "o", "C0", -0.12), ("ensemble", "s", "C1", 0.0),
                                        ("member", "^", "C2", 0.12)):
            ys = [100 * r[key] for r in rows]
            if ys:
                ax.scatter([i + dx] * len(ys), ys, marker=marker, color=colour, s=22,
                           label={"adaptive": "random draw", "ensemble": "averaged ensemble",
                                  "member": "member 0 alone"}[key] if i == 0 else None)
                ax.hlines(statistics.mean(ys), i + dx - 0.05, i + dx + 0.05, color=colour)
    ax.set_xticks(range(len(plan.arms)), [a.label for a in plan.arms], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("adaptive accuracy (%)")
    ax.set_title(plan.title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def write_report(plan: Plan, command: str) -> Path | None:
    records = collect(plan)
    if not records:
        return None
    out = Path(plan.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = out.with_suffix(".table.md")
    tmp = table.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(render(plan, records, command))
    os.replace(tmp, table)
    data = out.with_suffix(".json")
    # Per-process temporary names: two study processes (different --only) may write at once.
    tmp = data.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"plan": dataclasses.asdict(plan), "runs": records}, indent=1) + "\n")
    os.replace(tmp, data)
    plot(plan, records, out.with_suffix(".png"))
    return table


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
