"""Training recipes for stronger members: the strided CNN, TRADES, weight averaging, the
catastrophic-overfitting check, device choice, and joining single-seed runs into one package."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import synthetic_dataset, tiny_config
from redtrain.errors import UserError
from redtrain.export import export_runs
from redtrain.manifest import check_package
from redtrain.models import StridedCNN, count_parameters
from redtrain.objective import loss_terms, trades_point
from redtrain.config import AttackConfig
from redtrain.ensemble import build_ensemble, pick_device
from redtrain.runs import load_run
from redtrain.train import WeightAverage, train

AT = {"method": "independent-at", "loss": {"l_sim": 0.0, "l_lip": 0.0}}
STRIDED = {"arch": "cnn-strided", "widths": [4, 6], "hidden": 8}


def test_strided_cnn_is_the_published_small_cnn():
    # conv 16 and conv 32 (4x4, stride 2), one hidden layer of 100: Croce, Andriushchenko and Hein
    # (AISTATS 2019) give about 166k parameters.
    net = StridedCNN(1, (16, 32), 100, 10)
    assert count_parameters(net) == 16 * 16 + 16 + 32 * 16 * 16 + 32 + 32 * 7 * 7 * 100 + 100 + 100 * 10 + 10
    assert 160_000 < count_parameters(net) < 170_000
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_trades_terms_and_point():
    cfg = tiny_config(**AT, model=STRIDED, adversarial={"enabled": True, "loss": "trades", "trades_beta": 2.0,
                                                         "attack": {"eps": 0.1, "steps": 2}})
    assert not cfg.stacked
    data = synthetic_dataset()
    x, y = data.train.images[:8].float() / 255, data.train.labels[:8]
    members = build_ensemble(cfg, 10).members()
    terms = loss_terms(members, x, y, cfg, torch.Generator().manual_seed(0))
    assert set(terms) == {"ce", "kl", "loss"}
    torch.testing.assert_close(terms["loss"], terms["ce"] + 2.0 * terms["kl"])
    assert terms["kl"] >= 0
    point = trades_point(members[0], x, AttackConfig(eps=0.1, steps=3, step_ratio=0.25), torch.Generator().manual_seed(0))
    assert (point - x).abs().max() <= 0.1 + 1e-6 and point.min() >= 0 and point.max() <= 1
    with torch.no_grad():  # the inner maximisation moved away from the clean prediction
        kl = F.kl_div(F.log_softmax(members[0](point), 1), F.softmax(members[0](x), 1), reduction="sum")
    assert kl > 0


def test_trades_and_ema_and_check_are_checked():
    with pytest.raises(UserError, match="adversarial.loss: 'mart'"):
        tiny_config(**AT, adversarial={"enabled": True, "loss": "mart"})
    with pytest.raises(UserError, match="trades applies to method independent-at"):
        tiny_config(adversarial={"enabled": True, "loss": "trades"})
    with pytest.raises(UserError, match=r"optim.ema: 1.0 is outside \[0, 1\)"):
        tiny_config(optim={"ema": 1.0})
    with pytest.raises(UserError, match="device: 'tpu'"):
        tiny_config(device="tpu")


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="torch sees no CUDA device"):
            pick_device("cuda")


def test_weight_average_follows_the_formula():
    net = torch.nn.Linear(2, 1)
    average = WeightAverage(net, decay=0.5)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    average.update(net)  # step 0: decay min(0.5, 1/10) = 0.1
    torch.testing.assert_close(average.state["weight"], 0.1 * start + 0.9 * (start + 1))


def test_ema_run_keeps_the_averaged_weights(tmp_path):
    data = synthetic_dataset(n_train=64)
    cfg = tiny_config(**AT, optim={"epochs": 2, "batch_size": 32, "lr": 0.05, "ema": 0.9})
    train(cfg, tmp_path / "run", dataset=data, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    _, ensemble, _ = load_run(tmp_path / "run")
    loaded = ensemble.state_dict()
    assert all(torch.equal(loaded[k], state["average"]["state"][k]) for k in loaded)
    assert any(not torch.equal(loaded[k], state["model"][k]) for k in loaded)  # not the raw weights
    # resuming a finished EMA run continues from the same averages
    train(cfg, tmp_path / "run", dataset=data, progress=False)


def test_overfitting_check_stops_and_keeps_the_best_epoch(tmp_path, monkeypatch):
    import redtrain.train as train_mod

    figures = iter([0.6, 0.7, 0.45, 0.9])  # epoch 3 falls 0.25 below epoch 2: stop there
    monkeypatch.setattr(train_mod, "pgd_accuracy", lambda *a, **k: next(figures))
    saved = {}
    real_accuracy = train_mod.accuracy

    def remember(members, *a, **k):  # the weights seen at the end of each epoch
        saved[len(saved) + 1] = {k: v.clone() for k, v in members[0].state_dict().items()}
        return real_accuracy(members, *a, **k)

    monkeypatch.setattr(train_mod, "accuracy", remember)
    data = synthetic_dataset(n_train=64)
    cfg = tiny_config(**AT, optim={"epochs": 4, "batch_size": 32, "lr": 0.05},
                      adversarial={"enabled": True, "attack": {"eps": 0.1, "steps": 1},
                                   "check": {"enabled": True, "examples": 16, "steps": 1, "drop": 0.2}})
    result = train(cfg, tmp_path / "run", dataset=data, progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["checkPgdAccuracy"] for h in history] == [0.6, 0.7, 0.45]
    assert "catastrophic overfitting" in history[-1]["stopped"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochsRun"] == 3 and "epoch 2" in summary["weights"] and "stopped" in summary
    _, ensemble, _ = load_run(tmp_path / "run")  # a stopped run is finished: export takes epoch 2
    kept = ensemble.nets[0].state_dict()
    assert all(torch.equal(kept[k], saved[2][k]) for k in kept)
    assert result.evaluation["randomDrawAccuracy"] == history[1]["randomDrawAccuracy"]


def test_runs_of_one_recipe_join_into_one_package(tmp_path, monkeypatch):
    data = synthetic_dataset(n_train=64)
    runs = []
    for seed in (0, 1):
        cfg = tiny_config(**AT, members=1, seed=seed, model=STRIDED)
        train(cfg, tmp_path / f"s{seed}", dataset=data, progress=False)
        runs.append(tmp_path / f"s{seed}")
    import redtrain.export as export_mod

    monkeypatch.setattr(export_mod, "load_dataset", lambda *a, **k: data)
    pkg = export_runs(runs, tmp_path / "pkg", name="joined")
    manifest = check_package(pkg)
    assert len(manifest["members"]) == 2 and manifest["training"]["seeds"] == [0, 1]
    assert manifest["training"]["config"]["members"] == 2
    with pytest.raises(UserError, match="share a seed"):
        export_runs([runs[0], runs[0]], tmp_path / "bad")
    other = tiny_config(**AT, members=1, seed=2, model=STRIDED, optim={"epochs": 1, "batch_size": 32, "lr": 0.02})
    train(other, tmp_path / "other", dataset=data, progress=False)
    with pytest.raises(UserError, match="another recipe"):
        export_runs([runs[0], tmp_path / "other"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    before = {f.name: f.read_bytes() for f in pkg.iterdir() if f.is_file()}
    with pytest.raises(UserError, match="share a seed"):  # a refused join leaves the good package as it was
        export_runs([runs[0], runs[0]], pkg)
    assert {f.name: f.read_bytes() for f in pkg.iterdir() if f.is_file()} == before
