import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from conftest import synthetic_dataset, tiny_config
from redtrain import export as export_mod
from redtrain.errors import UserError
from redtrain.export import export_package
from redtrain.manifest import check_package, validate_manifest
from redtrain.ensemble import build_ensemble
from redtrain.runs import load_run
from redtrain.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = tiny_config()
    data = synthetic_dataset()
    result = train(cfg, run, dataset=data, progress=False)
    return cfg, data, run, result


def test_smoke_run_trains_and_records(trained):
    cfg, data, run, result = trained
    assert (run / "checkpoint.pt").is_file() and (run / "summary.json").is_file()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["epoch"] == 1 and {"ce", "sim", "lip", "loss"} <= set(history[-1])
    assert 0 <= result.evaluation["randomDrawAccuracy"] <= 1


def test_same_seed_same_weights(tmp_path, trained):
    cfg, data, run, _ = trained
    train(cfg, tmp_path / "again", dataset=data, progress=False)
    a = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path, trained):
    cfg, data, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(UserError, match="different config"):
        train(tiny_config(seed=7), copy, dataset=data, progress=False)


def test_resume_ignores_threads_and_unused_sections(tmp_path, trained):
    cfg, data, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = train(tiny_config(threads=2, hypernet={"chunk_size": 64}), copy, dataset=data, progress=False)
    assert result.epochs_done == 1


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import redtrain.train as train_mod

    data = synthetic_dataset(n_train=64)
    cfg = tiny_config(optim={"epochs": 2, "batch_size": 32, "lr": 0.01})
    train(cfg, tmp_path / "full", dataset=data, progress=False)

    real_accuracy, calls = train_mod.accuracy, []

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(train_mod, "accuracy", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "partial", dataset=data, progress=False)
    assert torch.load(tmp_path / "partial" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    with pytest.raises(UserError, match="unfinished"):
        load_run(tmp_path / "partial")
    assert load_run(tmp_path / "partial", unfinished=True)[2]["epoch"] == 1  # inspection only

    monkeypatch.setattr(train_mod, "accuracy", real_accuracy)
    train(cfg, tmp_path / "partial", dataset=data, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "partial" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_parity_golden_and_manifest(tmp_path, trained):
    cfg, data, run, _ = trained
    _, ensemble, _ = load_run(run)
    pkg = export_package(cfg, ensemble, tmp_path / "pkg", data)
    manifest = check_package(pkg)
    assert manifest["kind"] == "ensemble" and len(manifest["members"]) == cfg.members
    assert set(manifest["export"]) == {"opset", "torch", "onnx", "onnxruntime", "createdAt"}
    assert "0.5 * L_sim" in manifest["training"]["objective"]
    assert manifest["training"]["config"]["adversarial"]["mix"] == cfg.adversarial.mix
    golden = json.loads((pkg / "golden.json").read_text())
    for item in golden["images"]:
        pixels = np.asarray(Image.open(pkg / item["file"]), dtype=np.float32) / 255.0
        assert np.allclose(pixels.flatten(), item["input"], atol=1e-6)
        for i, member in enumerate(manifest["members"]):
            sess = ort.InferenceSession(str(pkg / member["file"]), providers=["CPUExecutionProvider"])
            out = sess.run(["logits"], {"input": pixels.reshape(1, 1, 28, 28)})[0][0]
            assert np.abs(out - np.array(item["logits"][i])).max() <= manifest["golden"]["atol"]
    # dynamic batch axis
    sess = ort.InferenceSession(str(pkg / "member-0.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((7, 1, 28, 28), np.float32)})[0].shape == (7, 10)


def test_failed_export_leaves_the_existing_package_intact(tmp_path, trained, monkeypatch):
    cfg, data, run, _ = trained
    _, ensemble, _ = load_run(run)
    pkg = export_package(cfg, ensemble, tmp_path / "pkg", data)
    before = {p.name: p.read_bytes() for p in pkg.iterdir() if p.is_file()}

    real = export_mod.onnx_logits
    monkeypatch.setattr(export_mod, "onnx_logits", lambda path, x: real(path, x) + 1e-2)  # a broken exporter
    with pytest.raises(UserError, match="differs from PyTorch"):
        export_package(cfg, ensemble, pkg, data)
    after = {p.name: p.read_bytes() for p in pkg.iterdir() if p.is_file()}
    assert before == after
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary folder left behind


def test_manifest_validation_reports_every_problem(tmp_path, trained):
    cfg, data, run, _ = trained
    _, ensemble, _ = load_run(run)
    pkg = export_package(cfg, ensemble, tmp_path / "pkg", data)
    m = json.loads((pkg / "manifest.json").read_text())
    m["input"]["std"] = [0]
    m["labels"] = m["labels"][:3]
    m["members"][1]["sha256"] = "xyz"
    m["colour"] = "blue"
    problems = validate_manifest(m)
    assert any("input.std" in p for p in problems)
    assert any("labels: 3 labels for 10 classes" in p for p in problems)
    assert any("members[1].sha256" in p for p in problems)
    assert any("colour: unknown key" in p for p in problems)

    m = json.loads((pkg / "manifest.json").read_text())
    m["evaluation"]["split"] = "train"
    del m["export"]["onnxruntime"]
    m["hypernet"] = {}
    problems = validate_manifest(m)
    assert len(problems) == 3
    assert any("evaluation.split" in p for p in problems)
    assert any("export.onnxruntime" in p for p in problems)
    assert any("hypernet: only allowed in kind 'ps-red'" in p for p in problems)

    m = json.loads((pkg / "manifest.json").read_text())
    (pkg / "member-2.onnx").write_bytes(b"tampered")
    with pytest.raises(UserError, match=r"members\[2\]: sha256"):
        check_package(pkg)


def test_methods_build_the_right_terms(dataset):
    x = dataset.train.images[:16].float() / 255
    y = dataset.train.labels[:16]
    from redtrain.objective import loss_terms

    for method, extra, expected in (
        ("independent", {"adversarial": {"enabled": False}, "loss": {}}, {"ce", "loss"}),
        ("independent-at", {"loss": {}}, {"ce", "loss"}),
        ("red", {}, {"ce", "sim", "lip", "loss"}),
    ):
        cfg = tiny_config(method=method, **extra)
        ens = build_ensemble(cfg, 10)
        terms = loss_terms(ens.members(), x, y, cfg, torch.Generator().manual_seed(0))
        assert set(terms) == expected
        terms["loss"].backward()


def test_distill_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    from redtrain.losses import distill_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    assert float(distill_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(logits, logits.flip(1), 4.0)) > 0.1


def test_distillation_from_an_exported_package(tmp_path, trained, dataset):
    """A run distils from a package's members: the teacher changes the clean term, and a package
    with a different member count is refused by name."""
    from redtrain.objective import loss_terms
    from redtrain.train import load_teacher

    cfg, data, run, _result = trained
    _, ensemble, _ = load_run(run)
    pkg = export_package(cfg, ensemble, tmp_path / "teacher", data)
    x = dataset.train.images[:16].float() / 255
    y = dataset.train.labels[:16]
    student = tiny_config(loss={"l_sim": 0.5, "l_lip": 0.05, "lip_attack": {"eps": 0.1, "steps": 1},
                                "distill": {"teacher": str(pkg), "weight": 1.0, "temperature": 2.0}})
    teacher = load_teacher(student, student.members)
    assert teacher is not None and len(teacher) == cfg.members
    ens = build_ensemble(student, 10)
    plain = loss_terms(ens.members(), x, y, student, torch.Generator().manual_seed(0))
    distilled = loss_terms(ens.members(), x, y, student, torch.Generator().manual_seed(0), teacher)
    assert float(plain["ce"].detach()) != pytest.approx(float(distilled["ce"].detach()), rel=1e-3)
    distilled["loss"].backward()
    four = tiny_config(members=4, loss={"distill": {"teacher": str(pkg)}})
    with pytest.raises(UserError, match="has 3 members; the run trains 4"):
        load_teacher(four, four.members)


def test_distill_config_is_checked():
    with pytest.raises(UserError, match=r"loss.distill.weight: 1.5 is outside \(0, 1\]"):
        tiny_config(loss={"distill": {"teacher": "models/fmnist-red", "weight": 1.5}})
