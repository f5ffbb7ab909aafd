"""`redtrain compare`: paired differences between two evaluations of the same images."""

from __future__ import annotations

import json

import pytest

from redtrain.cli import main
from redtrain.errors import UserError
from redtrain.paired import ADAPTIVE, load_scored, paired_difference

SETTINGS = {"eps": 0.1, "limit": 8, "apgd_steps": 3, "pgd_steps": 2, "seed": 0, "curve_steps": 2}


def _report(path, targets, settings=SETTINGS):
    results = [{"name": name, "spec": f"pkg/{name}", "members": members,
                "attacks": {ADAPTIVE: {"expected": sum(c) / (len(c) * members), "correctMembers": c}}}
               for name, members, c in targets]
    path.write_text(json.dumps({"meta": {"settings": settings, "dataset": "fashion-mnist"}, "results": results}))
    return path


def test_difference_is_b_minus_a_per_image_and_its_interval_holds_it(tmp_path):
    f = _report(tmp_path / "r.json", [("a", 5, [5, 0, 5, 0, 5, 0, 5, 0]), ("b", 4, [4, 4, 4, 0, 4, 0, 4, 0])])
    r = paired_difference(load_scored(f"{f}#a"), load_scored(f"{f}#pkg/b"), samples=2000)
    assert r["meanA"] == pytest.approx(0.5) and r["meanB"] == pytest.approx(0.625)
    assert r["difference"] == pytest.approx(0.125)
    # Only image 1 differs (0 -> 1): a resample's mean difference lies in [0, 1] and averages 1/8.
    assert 0.0 <= r["low"] <= r["difference"] <= r["high"] <= 1.0
    assert r["images"] == 8 and r["samples"] == 2000


def test_identical_evaluations_differ_by_exactly_zero(tmp_path):
    f = _report(tmp_path / "r.json", [("a", 5, [3, 1, 4, 1, 5, 0, 2, 5])])
    r = paired_difference(load_scored(str(f)), load_scored(f"{f}#a"), samples=500)
    assert r["difference"] == 0 and r["low"] == 0 and r["high"] == 0


def test_refuses_unpaired_or_unlike_evaluations(tmp_path):
    a = _report(tmp_path / "a.json", [("a", 5, [5] * 8)])
    fewer = _report(tmp_path / "fewer.json", [("b", 5, [5] * 4)])
    other_eps = _report(tmp_path / "eps.json", [("b", 5, [5] * 8)], {**SETTINGS, "eps": 0.2})
    steps_only_of_the_curve = _report(tmp_path / "curve.json", [("b", 5, [4] * 8)], {**SETTINGS, "curve_steps": 9})
    with pytest.raises(UserError, match="same images"):
        paired_difference(load_scored(str(a)), load_scored(str(fewer)))
    with pytest.raises(UserError, match=r"different settings \(eps\)"):
        paired_difference(load_scored(str(a)), load_scored(str(other_eps)))
    # The eps curve's steps do not change the adaptive figure at the evaluated eps.
    assert paired_difference(load_scored(str(a)), load_scored(str(steps_only_of_the_curve)),
                             samples=200)["difference"] == pytest.approx(-0.2)


def test_names_the_problem_with_a_reference(tmp_path):
    two = _report(tmp_path / "two.json", [("a", 5, [5] * 8), ("b", 5, [5] * 8)])
    with pytest.raises(UserError, match="name one target after '#'.*'a', 'b'"):
        load_scored(str(two))
    with pytest.raises(UserError, match="not a robustness.json"):
        load_scored(str(tmp_path / "missing.json"))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"meta": {"settings": SETTINGS}, "results": [
        {"name": "a", "spec": "a", "members": 5, "attacks": {ADAPTIVE: {"expected": 0.5}}}]}))
    with pytest.raises(UserError, match="no per-image results"):
        load_scored(str(old))


def test_cli_prints_one_line_or_json(tmp_path, capsys):
    f = _report(tmp_path / "r.json", [("a", 5, [5, 0, 5, 0, 5, 0, 5, 0]), ("b", 5, [5, 5, 5, 0, 5, 0, 5, 0])])
    assert main(["compare", f"{f}#a", f"{f}#b", "--samples", "300"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("b minus a on 8 images: +12.50 points (62.50 against 50.00), 95% bootstrap interval")
    assert main(["compare", f"{f}#a", f"{f}#b", "--samples", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["difference"] == pytest.approx(0.125)
    assert main(["compare", f"{f}#a", f"{f}#b", "--samples", "5"]) == 2
    assert "--samples must be at least 100" in capsys.readouterr().err
