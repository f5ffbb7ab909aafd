"""White-box robustness of served packages: the adaptive protocol beside the weak one.

What is attacked is exactly what the service serves: each member is rebuilt from the package's ONNX
files (for `ps-red`, from the hypernetwork's outputs run in onnxruntime) and checked against
onnxruntime before any attack runs. A randomized ensemble answers with member i with probability
1/N, so the quantity that matters is the expected accuracy, mean over members of 1[f_i(x') = y]; the
adaptive attacks maximise the loss averaged over all N members, which is EOT computed exactly.

Protocols, all at Linf eps in pixel space [0, 1]:
- weak (the public RED code's): PGD-10 where every step differentiates one randomly drawn member,
  success checked against another independent draw;
- PGD-k with random start on the member-averaged CE;
- APGD-CE and APGD-DLR on the member-averaged loss;
- per example, the worst of those three ("adaptive");
- member-to-member transfer: PGD on member i alone, how often it fools member j;
- APGD-CE expected accuracy against eps.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from tqdm import tqdm

from redtrain.attacks import apgd, member_ce, pgd, pgd_worst, project
from redtrain.data import load_dataset, to_unit
from redtrain.errors import UserError
from redtrain.manifest import check_package, sha256_file
from redtrain.onnx_torch import OnnxMember
from redtrain.train import git_commit

PARITY_ATOL = 1e-4


@dataclass
class Target:
    """What one report column describes: a package, or one member of it served alone."""

    spec: str
    name: str
    manifest: dict
    members: list[OnnxMember]


@dataclass(frozen=True)
class Settings:
    eps: float = 0.1
    limit: int | None = None
    apgd_steps: int = 100
    pgd_steps: int = 50
    weak_steps: int = 10
    transfer_steps: int = 20
    curve_eps: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
    curve_steps: int = 50
    batch_size: int = 500
    seed: int = 0
    data_root: str | None = None


# --- loading the served members ------------------------------------------------------------------

def _parse_spec(spec: str) -> tuple[Path, int | None]:
    """`models/x` is the package; `models/x:K` is its member K alone (a single, undefended model)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and not Path(spec).exists():
        return Path(head), int(tail)
    return Path(spec), None


def _ensemble_members(pkg: Path, manifest: dict) -> list[OnnxMember]:
    return [OnnxMember(onnx.load(str(pkg / m["file"])), label=f"{pkg}/{m['file']}") for m in manifest["members"]]


def _psred_members(pkg: Path, manifest: dict) -> list[OnnxMember]:
    hyper = ort.InferenceSession(str(pkg / manifest["hypernet"]["file"]), providers=["CPUExecutionProvider"])
    tensors = manifest["target"]["tensors"]
    target = onnx.load(str(pkg / manifest["target"]["file"]), load_external_data=False)
    members = []
    for m in manifest["members"]:
        outputs = hyper.run([t["name"] for t in tensors],
                            {manifest["hypernet"]["input"]: np.array([m["index"]], dtype=np.int64)})
        weights = {}
        for t, value in zip(tensors, outputs):
            if list(value.shape) != t["shape"]:
                raise UserError(f"{pkg}: hypernet output {t['name']} for member {m['index']} has shape "
                                f"{list(value.shape)}, the target expects {t['shape']}")
            weights[t["name"]] = value.astype(np.float32)
        members.append(OnnxMember(target, weights, label=f"{pkg} member {m['index']}"))
    return members


def load_target(spec: str) -> Target:
    pkg, single = _parse_spec(spec)
    manifest = check_package(pkg)
    members = (_psred_members if manifest["kind"] == "ps-red" else _ensemble_members)(pkg, manifest)
    for module in members:
        module.eval()
    name = manifest["name"]
    if single is not None:
        if not 0 <= single < len(members):
            raise UserError(f"{spec}: member {single} is out of range [0, {len(members)})")
        members, name = [members[single]], f"{name} member {single} alone"
    return Target(spec, name, manifest, members)


def _onnxruntime_logits(target: Target, x: np.ndarray) -> list[np.ndarray]:
    """Every member's logits from onnxruntime itself (the reference the service runs)."""
    pkg, single = _parse_spec(target.spec)
    m = target.manifest
    if m["kind"] == "ps-red":
        from redtrain.psred_export import member_weights, target_logits  # noqa: PLC0415

        indices = [e["index"] for e in m["members"]]
        indices = indices if single is None else [indices[single]]
        return [target_logits(pkg / m["target"]["file"], member_weights(pkg / m["hypernet"]["file"], i,
                                                                          m["target"]["tensors"]), x)
                for i in indices]
    files = [e["file"] for e in m["members"]]
    files = files if single is None else [files[single]]
    out = []
    for f in files:
        session = ort.InferenceSession(str(pkg / f), providers=["CPUExecutionProvider"])
        out.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return out


def check_parity(target: Target, x: torch.Tensor) -> float:
    """Refuse to attack a rebuilt member that does not compute what onnxruntime computes."""
    reference = _onnxruntime_logits(target, x.numpy())
    worst = 0.0
    with torch.no_grad():
        for i, (module, ref) in enumerate(zip(target.members, reference)):
            diff = float(np.abs(module(x).numpy() - ref).max())
            if not diff <= PARITY_ATOL:
                raise UserError(f"{target.spec}: member {i} rebuilt in PyTorch differs from onnxruntime by "
                                f"{diff:.3g} (allowed {PARITY_ATOL:g}); not evaluating weights that are not served")
            worst = max(worst, diff)
    return worst


# --- scoring -------------------------------------------------------------------------------------

def _stacked(members: Sequence[OnnxMember]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.stack([m(x) for m in members])


def member_correct(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bool [M, B]: member i right on example b."""
    with torch.no_grad():
        return torch.stack([m(x).argmax(dim=1) == y for m in members])


def ensemble_correct(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        probs = torch.stack([F.softmax(m(x), dim=1) for m in members]).mean(dim=0)
        return probs.argmax(dim=1) == y


def gradient_cosine(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B]: per example, the mean over member pairs of |cos| between the members' input gradients of
    their CE; the batch mean is L_sim (losses.gradient_similarity) at clean points. 1 means the members
    share one gradient direction (alike to a first-order attacker), 0 means orthogonal gradients."""
    grads = []
    for m in members:
        z = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(m(z), y, reduction="sum"), z)  # no graph kept: not trained
        grads.append(g.flatten(1))
    pairs = [F.cosine_similarity(a, b, dim=1, eps=1e-12).abs() for a, b in itertools.combinations(grads, 2)]
    return torch.stack(pairs).mean(dim=0)


def _scored(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return member_correct(members, x, y), ensemble_correct(members, x, y)


def summarise(correct: torch.Tensor, ensemble: torch.Tensor) -> dict:
    per_member = correct.float().mean(dim=1)
    return {"expected": float(correct.float().mean()), "worstMember": float(per_member.min()),
            "perMember": [round(float(a), 4) for a in per_member], "ensemble": float(ensemble.float().mean())}


def _batches(x: torch.Tensor, y: torch.Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start:start + size], y[start:start + size]


def weak_protocol(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                  generator: torch.Generator) -> torch.Tensor:
    """PGD where each step's gradient comes from one freshly drawn member (what a naive attacker of the
    random model sees), success judged by another independent draw. Returns bool [B] correct."""
    x = x.detach()
    noise = torch.rand(x.shape, generator=generator)
    x_adv = project(x + (2 * noise - 1) * eps, x, eps)
    for _ in range(steps):
        member = members[int(torch.randint(len(members), (1,), generator=generator))]
        z = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(member(z), y, reduction="sum"), z)
        x_adv = project(x_adv + (eps / 4) * grad.sign(), x, eps)
    judge = members[int(torch.randint(len(members), (1,), generator=generator))]
    with torch.no_grad():
        return judge(x_adv).argmax(dim=1) == y


def transfer_counts(members: Sequence[OnnxMember], x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled [M, M], clean [M]): fooled[i][j] counts the examples member j gets right clean and
    wrong after PGD made on member i alone; clean[j] counts the examples member j gets right."""
    clean = member_correct(members, x, y)
    fooled = torch.zeros(len(members), len(members))
    for i, source in enumerate(members):
        x_adv = pgd(member_ce(source), x, y, eps, 2.5 * eps / steps, steps, generator=generator)
        fooled[i] = (clean & ~member_correct(members, x_adv, y)).sum(dim=1).float()
    return fooled, clean.sum(dim=1).float()


def transfer_matrix(fooled: torch.Tensor, clean: torch.Tensor) -> list[list[float]]:
    """[i][j]: of the examples member j gets right clean, the fraction that PGD made on member i alone
    makes j get wrong. The diagonal is the white-box success rate on each member."""
    return [[round(float(v), 4) for v in row] for row in fooled / clean.clamp(min=1)[None, :]]


def evaluate_target(target: Target, x: torch.Tensor, y: torch.Tensor, settings: Settings,
                    progress: bool = True) -> dict:
    members = target.members
    stacked = _stacked(members)
    generator = torch.Generator().manual_seed(settings.seed)
    eps = settings.eps
    attacks = {
        f"PGD-{settings.pgd_steps}": lambda xb, yb: pgd_worst(stacked, xb, yb, eps, settings.pgd_steps,
                                                                2.5 * eps / settings.pgd_steps, generator),
        f"APGD-CE-{settings.apgd_steps}": lambda xb, yb: apgd(stacked, xb, yb, eps, settings.apgd_steps, "ce",
                                                              generator),
        f"APGD-DLR-{settings.apgd_steps}": lambda xb, yb: apgd(stacked, xb, yb, eps, settings.apgd_steps, "dlr",
                                                               generator),
    }
    curve_eps = [e for e in settings.curve_eps if abs(e - eps) > 1e-12]
    stages = ["clean", "weak", *attacks, *[f"curve {e:g}" for e in curve_eps]]
    if len(members) > 1:
        stages.append("transfer")
    bar = tqdm(total=len(stages) * -(-x.shape[0] // settings.batch_size), desc=target.name, disable=not progress,
               file=sys.stderr)

    def over_batches(stage: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list:
        out = []
        for xb, yb in _batches(x, y, settings.batch_size):
            bar.set_postfix_str(stage)
            out.append(fn(xb, yb))
            bar.update(1)
        return out

    result: dict = {"name": target.name, "spec": target.spec, "members": len(members)}
    clean = over_batches("clean", lambda xb, yb: _scored(members, xb, yb))
    result["clean"] = summarise(torch.cat([c for c, _ in clean], dim=1), torch.cat([e for _, e in clean]))
    if len(members) > 1:
        cosine = torch.cat([gradient_cosine(members, xb, yb) for xb, yb in _batches(x, y, settings.batch_size)])
        result["clean"]["gradientCosine"] = round(float(cosine.mean()), 4)

    weak = over_batches("weak", lambda xb, yb: weak_protocol(members, xb, yb, eps, settings.weak_steps, generator))
    result["weak"] = {"name": f"PGD-{settings.weak_steps}, one random member per step, judged by another draw",
                      "accuracy": float(torch.cat(weak).float().mean())}

    per_attack, worst_count = {}, None
    for name, attack in attacks.items():
        outs = over_batches(name, lambda xb, yb: _scored(members, attack(xb, yb), yb))
        correct = torch.cat([c for c, _ in outs], dim=1)
        per_attack[name] = summarise(correct, torch.cat([e for _, e in outs]))
        count = correct.sum(dim=0)
        worst_count = count if worst_count is None else torch.minimum(worst_count, count)
    per_attack["adaptive (worst of the above, per example)"] = {
        "expected": float(worst_count.float().mean() / len(members))}
    result["attacks"] = per_attack

    curve = {}
    for e in settings.curve_eps:
        if abs(e - eps) <= 1e-12:
            curve[f"{e:g}"] = per_attack[f"APGD-CE-{settings.apgd_steps}"]["expected"]
            continue
        outs = over_batches(f"curve {e:g}", lambda xb, yb: member_correct(
            members, apgd(stacked, xb, yb, e, settings.curve_steps, "ce", generator), yb))
        curve[f"{e:g}"] = float(torch.cat(outs, dim=1).float().mean())
    result["curve"] = curve
    result["curveAttack"] = (f"APGD-CE-{settings.curve_steps} (APGD-CE-{settings.apgd_steps} at eps {eps:g})")

    if len(members) > 1:
        counts = over_batches("transfer", lambda xb, yb: transfer_counts(members, xb, yb, eps,
                                                                         settings.transfer_steps, generator))
        result["transfer"] = transfer_matrix(sum(f for f, _ in counts), sum(c for _, c in counts))
    bar.close()
    return result


# --- report --------------------------------------------------------------------------------------

def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _provenance(results: list[dict], meta: dict) -> list[str]:
    """Name the run that produced each row when some rows were reused from earlier runs."""
    earlier = [r for r in results if r.get("command", meta["command"]) != meta["command"]]
    if not earlier:
        return []
    lines = ["Rows reused from earlier runs with the same settings (`--reuse`):", ""]
    lines += [f"- {r['name']}: `{r['command']}` on {r['date']} (commit `{r['commit']}`)" for r in earlier]
    return lines + [""]


def render_markdown(results: list[dict], meta: dict) -> str:
    s = meta["settings"]
    eps = s["eps"]
    lines = [
        "# White-box robustness of the shipped packages",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (redtrain commit `{meta['commit']}`, seed {s['seed']}, "
        f"{meta['threads']} torch threads, {meta['seconds']:.0f} s).",
        "",
        *_provenance(results, meta),
        f"Data: the first {meta['examples']} images of the {meta['dataset']} test split. Linf eps {eps:g} in pixel "
        "space [0, 1]. Members are rebuilt from the packages' ONNX files and checked against onnxruntime "
        f"(largest logit difference {meta['parityMax']:.2g}, allowed {PARITY_ATOL:g}) before any attack.",
        "",
        "A request is answered by one member drawn uniformly, so the figure that matters is the **expected "
        "accuracy**: the mean over members of being right on the attacked input. The adaptive attacks maximise the "
        "loss averaged over all members (EOT computed exactly, no sampling noise). The weak protocol is the one "
        "the public RED code reports: every PGD step differentiates one randomly drawn member and success is "
        "judged by another independent draw. Numbers are accuracies in percent.",
        "",
        "## Clean accuracy",
        "",
        "The last column is the members' input-gradient similarity at the clean test points: per example the "
        "mean over member pairs of |cos| between their CE input gradients (the L_sim of training), then the mean "
        "over examples. Near 1, the members look alike to a gradient attacker.",
        "",
        "| target | members | each member | random draw (expected) | averaged ensemble | gradient \\|cos\\| |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r["clean"]
        cosine = f"{c['gradientCosine']:.2f}" if "gradientCosine" in c else "-"
        lines.append(f"| {r['name']} | {r['members']} | {', '.join(_pct(a) for a in c['perMember'])} | "
                     f"{_pct(c['expected'])} | {_pct(c['ensemble'])} | {cosine} |")
    names = list(results[0]["attacks"])
    lines += ["", f"## Robust accuracy at eps {eps:g}", "",
              "Expected accuracy under each attack; the weak protocol's accuracy first for contrast.", "",
              "| target | weak protocol | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for r in results:
        lines.append(f"| {r['name']} | {_pct(r['weak']['accuracy'])} | "
                     + " | ".join(_pct(r["attacks"][n]["expected"]) for n in names) + " |")
    apgd_names = [n for n in names if "worst" not in n]
    lines += ["", "Worst member and averaged ensemble (mean softmax) on the same attacked inputs:", "",
              "| target | " + " | ".join(f"{n}: worst member / ensemble" for n in apgd_names) + " |",
              "|---|" + "---|" * len(apgd_names)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(
            f"{_pct(r['attacks'][n]['worstMember'])} / {_pct(r['attacks'][n]['ensemble'])}" for n in apgd_names) + " |")
    curve_keys = list(results[0]["curve"])
    lines += ["", "## Expected accuracy against eps", "", f"Attack: {results[0]['curveAttack']}. Plot: "
              "[robustness-eps.png](robustness-eps.png).", "",
              "| target | " + " | ".join(f"eps {k}" for k in curve_keys) + " |", "|---|" + "---|" * len(curve_keys)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_pct(r["curve"][k]) for k in curve_keys) + " |")
    lines += ["", "## Member-to-member transfer", "",
              f"Row i, column j: of the examples member j classifies correctly, the percentage that PGD-"
              f"{s['transfer_steps']} made on member i alone makes member j misclassify (eps {eps:g}). The "
              "diagonal is white-box success on one member; low off-diagonal values mean members do not share "
              "adversarial weaknesses. Heatmaps: [robustness-transfer.png](robustness-transfer.png).", ""]
    for r in results:
        if "transfer" not in r:
            continue
        m = r["transfer"]
        off = [m[i][j] for i in range(len(m)) for j in range(len(m)) if i != j]
        lines += [f"**{r['name']}** (mean off-diagonal {_pct(sum(off) / len(off))})", "",
                  "| from \\ to | " + " | ".join(str(j) for j in range(len(m))) + " |", "|---|" + "---|" * len(m)]
        lines += [f"| {i} | " + " | ".join(_pct(v) for v in row) + " |" for i, row in enumerate(m)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _plots(results: list[dict], out: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        keys = list(r["curve"])
        ax.plot([float(k) for k in keys], [100 * r["curve"][k] for k in keys], marker="o", label=r["name"])
    ax.set_xlabel("Linf eps (pixel scale [0, 1])")
    ax.set_ylabel("expected accuracy under APGD-CE (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "robustness-eps.png", dpi=120)
    plt.close(fig)
    written.append("robustness-eps.png")

    with_transfer = [r for r in results if "transfer" in r]
    if with_transfer:
        fig, axes = plt.subplots(1, len(with_transfer), figsize=(4 * len(with_transfer), 3.6), squeeze=False)
        for ax, r in zip(axes[0], with_transfer):
            m = np.array(r["transfer"]) * 100
            im = ax.imshow(m, vmin=0, vmax=100, cmap="magma")
            ax.set_title(r["name"], fontsize=9)
            ax.set_xlabel("fooled member j")
            ax.set_ylabel("attacked member i")
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < 60 else "black")
        fig.colorbar(im, ax=axes[0].tolist(), label="% fooled")
        fig.savefig(out / "robustness-transfer.png", dpi=120)
        plt.close(fig)
        written.append("robustness-transfer.png")
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fingerprint(target: Target) -> str:
    """Identifies the served weights: the manifest names every file with its sha256."""
    pkg, _ = _parse_spec(target.spec)
    return sha256_file(pkg / "manifest.json")


def _reusable(out: Path, settings: Settings, examples: int) -> dict[tuple[str, str], dict]:
    """Results of an earlier run in `out` made with the same settings on the same examples."""
    try:
        earlier = json.loads((out / "robustness.json").read_text())
    except (OSError, ValueError):
        return {}
    meta = earlier.get("meta", {})
    same = (meta.get("settings") == {**asdict(settings), "curve_eps": list(settings.curve_eps)}
            and meta.get("examples") == examples)
    if not same:
        return {}
    return {(r["spec"], r.get("fingerprint", "")): r for r in earlier.get("results", [])}


def run_evaluation(specs: Sequence[str], out_dir: str | Path, settings: Settings, command: str,
                   progress: bool = True, data=None, reuse: bool = False) -> Path:
    """Evaluate every target on the same examples; write robustness.md, robustness.json and plots.

    With `reuse`, a target already in `out_dir/robustness.json` with the same settings, examples and
    package manifest is not attacked again (so one package can be added to a report without
    re-running the others).
    """
    if not specs:
        raise UserError("give at least one --package")
    started = _dt.datetime.now(_dt.timezone.utc)
    targets = [load_target(s) for s in specs]
    first = targets[0].manifest
    dataset_cfg = first.get("training", {}).get("config", {}).get("data", {})
    name = dataset_cfg.get("name", first.get("training", {}).get("dataset"))
    root = settings.data_root or dataset_cfg.get("root")
    if data is None:
        if not name or not root:
            raise UserError("the package does not record its dataset; pass --data-root")
        data = load_dataset(name, root)
    shapes = {tuple(t.manifest["input"]["shape"]) for t in targets}
    if len(shapes) != 1 or tuple(data.test.images.shape[1:]) not in shapes:
        raise UserError(f"input shapes differ: packages {sorted(shapes)}, dataset {tuple(data.test.images.shape[1:])}")
    n = data.test.images.shape[0] if settings.limit is None else min(settings.limit, data.test.images.shape[0])
    x, y = to_unit(data.test.images[:n]), data.test.labels[:n]
    parity = max(check_parity(t, x[:256]) for t in targets)
    out = Path(out_dir)
    earlier = _reusable(out, settings, n) if reuse else {}
    results = []
    for t in targets:
        key = (t.spec, _fingerprint(t))
        if key in earlier:
            results.append(earlier[key])
            continue
        results.append({**evaluate_target(t, x, y, settings, progress), "fingerprint": key[1],
                        "command": command, "commit": git_commit(),
                        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})

    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "threads": torch.get_num_threads(), "examples": n, "dataset": data.name, "parityMax": parity,
            "settings": {**asdict(settings), "curve_eps": list(settings.curve_eps)},
            "seconds": (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()}
    plots = _plots(results, out)
    _write_atomic(out / "robustness.json", json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    _write_atomic(out / "robustness.md", render_markdown(results, meta))
    meta["plots"] = plots
    return out / "robustness.md"
