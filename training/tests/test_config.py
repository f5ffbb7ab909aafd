import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from redtrain.config import config_from_dict, load_config
from redtrain.errors import UserError


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = Path(__file__).resolve().parents[2] / "models"


def test_shipped_configs_load():
    for name, members in (("fmnist-red", 5), ("fmnist-baseline", 2), ("fmnist-psred", 5)):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.members == members and cfg.adversarial.enabled and cfg.adversarial.attack.eps == 0.1


def _settings(tree: dict, prefix: str = "") -> dict:
    """{'optim.lr': 0.003, ...}: every leaf of a config tree by its dotted key."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_configs_folder_holds_exactly_the_shipped_packages_recipes():
    """configs/NAME.yaml made models/NAME: its settings, defaults included, are what the package recorded."""
    shipped = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert shipped == sorted(p.name for p in MODELS.iterdir() if (p / "manifest.json").is_file())
    for name in shipped:
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.name == name
        resolved = _settings(json.loads(json.dumps(cfg.to_dict())))  # as export records it
        recorded = _settings(json.loads((MODELS / name / "manifest.json").read_text())["training"]["config"])
        # The package records the run's name; hypernet settings mean nothing to other methods.
        compared = [k for k in recorded if k != "name" and (cfg.method == "ps-red" or not k.startswith("hypernet."))]
        assert {k: resolved.get(k) for k in compared} == {k: recorded[k] for k in compared}, name


def test_experiment_names_cannot_collide_with_a_package():
    experiments = sorted((CONFIGS / "experiments").glob("*.yaml"))
    assert experiments
    packages = {p.name for p in MODELS.iterdir()}
    for path in experiments:
        raw = yaml.safe_load(path.read_text())
        if "arms" in raw:  # a study plan (redtrain study), not a run config
            continue
        name = raw["name"]
        # exp-* (single experiments), study-*, psred-* (study arms) and members-* (the member recipe
        # ladder, reports/members.md): never a package's name.
        assert name == path.stem and name.startswith(("exp-", "study-", "psred-", "members-")), path.name
        assert name not in packages and not name.startswith("fmnist-")


def test_unknown_key_is_named():
    with pytest.raises(UserError, match="unknown config key 'loss.l_simm'"):
        config_from_dict({"name": "x", "loss": {"l_simm": 1.0}})


def test_wrong_type_is_named():
    with pytest.raises(UserError, match="'optim.epochs': expected int, got str"):
        config_from_dict({"name": "x", "optim": {"epochs": "five"}})


def test_int_is_accepted_for_float_but_bool_is_not_an_int():
    assert config_from_dict({"name": "x", "loss": {"l_sim": 1}}).loss.l_sim == 1.0
    with pytest.raises(UserError, match="got bool"):
        config_from_dict({"name": "x", "members": True})


def test_inconsistent_method_is_refused():
    with pytest.raises(UserError, match="independent-at needs adversarial.enabled"):
        config_from_dict({"name": "x", "method": "independent-at"})


def test_cli_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: x
        optim: {epochs: 1, batchsize: 4}
    """))
    proc = subprocess.run([sys.executable, "-m", "redtrain", "train", "--config", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown config key 'optim.batchsize'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_missing_dataset_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\ndata: {{root: {tmp_path / 'nothing'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "redtrain", "train", "--config", str(cfg), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "dataset-fashion-mnist" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_validate_lists_problems_on_one_line(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "redserve-package", "formatVersion": 2}')
    proc = subprocess.run([sys.executable, "-m", "redtrain", "validate", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "formatVersion: expected 1" in proc.stderr and "members: missing" in proc.stderr
