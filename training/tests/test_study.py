"""The study runner: plan checking, one end-to-end tiny study, and resuming without redoing work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from redtrain.errors import UserError
from redtrain.study import load_plan, run_study
from redtrain.study_report import render
from test_data import write_idx


def _fmnist(root, n_train=96, n_test=32):
    """Synthetic Fashion-MNIST files: class k is a bright bar at row 2 + 2k (learnable in one epoch)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y:4 + 2 * y, 4:24] = 230
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


def _plan(tmp_path, seeds=(0, 1)):
    data = tmp_path / "data"
    data.mkdir()
    _fmnist(data)
    arm = {
        "name": "tiny", "method": "red", "members": 2, "threads": 1,
        "data": {"root": str(data)},
        "model": {"arch": "cnn-small", "widths": [4, 4, 4], "hidden": 8},
        "optim": {"epochs": 1, "batch_size": 32},
        "loss": {"l_sim": 0.5, "l_lip": 0.05, "lip_attack": {"eps": 0.1, "steps": 1}},
        "adversarial": {"enabled": True, "attack": {"eps": 0.1, "steps": 1}},
    }
    (tmp_path / "arm.yaml").write_text(yaml.safe_dump(arm))
    plan = {
        "title": "tiny", "runs": str(tmp_path / "runs"), "report": str(tmp_path / "report" / "results.md"),
        "seeds": list(seeds),
        "eval": {"limit": 8, "args": ["--steps", "2", "--pgd-steps", "1", "--curve-steps", "1", "--transfer-steps", "1"]},
        "arms": [{"name": "a", "label": "arm A", "config": str(tmp_path / "arm.yaml")}],
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    return tmp_path / "plan.yaml"


def test_a_tiny_study_trains_exports_evaluates_reports_and_resumes(tmp_path):
    plan_path = _plan(tmp_path)
    table = run_study(str(plan_path), jobs=2, stages={"train", "export", "evaluate", "report"}, only=None,
                      progress=False)
    text = table.read_text()
    assert "| arm A | 0, 1 |" in text
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert sorted(r["run"] for r in data["runs"]) == ["a-s0", "a-s1"]
    assert all(0.0 <= r["adaptive"] <= r["clean"] + 1e-9 for r in data["runs"])
    assert (tmp_path / "report" / "results.png").stat().st_size > 1000
    # Each seed's config carries its own seed; the runs differ.
    assert yaml.safe_load((tmp_path / "runs" / "a-s1.yaml").read_text())["seed"] == 1
    # A second call finds everything done: nothing retrained, re-exported or re-evaluated.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.suffix in (".pt", ".onnx")}
    run_study(str(plan_path), jobs=1, stages={"train", "export", "evaluate", "report"}, only=None, progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    # A fresh checkout has results.json but no runs/: the recorded runs stay in the report, untrained.
    shutil.rmtree(tmp_path / "runs")
    run_study(str(plan_path), jobs=1, stages={"train", "export", "evaluate", "report"}, only=None, progress=False)
    assert not (tmp_path / "runs" / "a-s0").exists()
    again = json.loads((tmp_path / "report" / "results.json").read_text())
    assert again["runs"] == data["runs"]
    # --redo retrains one named run; --only selects it by run name; its new record replaces the old.
    run_study(str(plan_path), jobs=1, stages={"train", "export", "evaluate", "report"}, only={"a-s1"},
              progress=False, redo={"a-s1"})
    assert (tmp_path / "runs" / "a-s1" / "summary.json").exists() and not (tmp_path / "runs" / "a-s0").exists()
    assert sorted(r["run"] for r in json.loads((tmp_path / "report" / "results.json").read_text())["runs"]) == \
        ["a-s0", "a-s1"]


def test_unknown_run_names_are_refused(tmp_path):
    with pytest.raises(UserError, match="no arm or run named a-s7"):
        run_study(str(_plan(tmp_path)), jobs=1, stages={"report"}, only={"a-s7"}, progress=False)


def test_plan_problems_are_reported_together(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "arms": [{"name": "a", "config": "missing.yaml"}, {"config": "x"}], "seeds": "0", "colour": 1}))
    with pytest.raises(UserError) as err:
        load_plan(tmp_path / "bad.yaml")
    message = str(err.value)
    for part in ("unknown key 'colour'", "arms[0].config: missing.yaml not found", "arms[1]: needs name and config",
                 "seeds: expected a non-empty list of integers"):
        assert part in message


def test_render_gives_mean_and_range_over_seeds(tmp_path):
    plan = load_plan(_plan(tmp_path))
    rows = [{"arm": "a", "seed": s, "clean": c, "adaptive": a, "ensemble": a, "member": a - 0.1, "transfer": 0.1,
             "cosine": 0.3, "weak": 0.7, "trainSeconds": 600.0, "examples": 1000}
            for s, c, a in ((0, 0.85, 0.60), (1, 0.87, 0.64))]
    text = render(plan, rows, "cmd")
    assert "| arm A | 0, 1 | 86.0 (85.0-87.0) | 62.0 (60.0-64.0) |" in text
    assert "10 min (10-10)" in text


def test_a_stopped_arm_is_skipped_and_reported_with_its_reason(tmp_path, capsys):
    plan_path = _plan(tmp_path, seeds=(0,))
    raw = yaml.safe_load(plan_path.read_text())
    raw["arms"].append({"name": "b", "label": "arm B", "config": raw["arms"][0]["config"],
                        "stopped": "members collapsed by epoch 2"})
    plan_path.write_text(yaml.safe_dump(raw))
    table = run_study(str(plan_path), jobs=1, stages={"train", "export", "evaluate", "report"}, only=None)
    assert "b: stopped (members collapsed by epoch 2)" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "b-s0").exists()
    assert "| arm B | stopped: members collapsed by epoch 2 | - |" in table.read_text()
    # Named explicitly, a stopped arm still runs (to resume or finish it on purpose).
    run_study(str(plan_path), jobs=1, stages={"train"}, only={"b-s0"}, progress=False)
    assert (tmp_path / "runs" / "b-s0" / "checkpoint.pt").exists()


def test_a_stopped_arm_needs_a_reason_and_arms_refuse_unknown_keys(tmp_path):
    plan_path = _plan(tmp_path, seeds=(0,))
    raw = yaml.safe_load(plan_path.read_text())
    raw["arms"][0]["stopped"] = True
    raw["arms"][0]["lable"] = "typo"
    plan_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        load_plan(plan_path)
    assert "arms[0].stopped: expected the reason as text" in str(err.value)
    assert "arms[0]: unknown key 'lable'" in str(err.value)
