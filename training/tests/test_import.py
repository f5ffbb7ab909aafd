"""`redtrain import`: packages from ONNX files and from a module plus checkpoints, refusals that
name the file and what differs, and `evaluate` on an imported package in its own input space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from conftest import synthetic_dataset
from redtrain.cli import main
from redtrain.errors import UserError
from redtrain.evaluate import run_evaluation
from redtrain.importer import import_package, load_spec
from redtrain.manifest import check_package, sha256_file
from redtrain.models import RedResNet18, SmallCNN
from redtrain.package import check_parity, load_target
from redtrain.protocols import Settings

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
TINY_EVAL = Settings(eps=0.05, limit=8, apgd_steps=2, pgd_steps=2, weak_steps=1, transfer_steps=1,
                     curve_eps=(0.05,), curve_steps=1, batch_size=8, member_steps=1, arc_iterations=1, targets=1)


def _tiny_rgb(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=3, widths=(4, 4), hidden=8, classes=classes, image_size=8).eval()


def _onnx(module: nn.Module, path: Path, shape=(3, 8, 8), *, input_name="input", output_name="logits",
          dynamic_batch=True, opset=17) -> Path:
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), input_names=[input_name],
                      output_names=[output_name], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return path


def _spec(**raw) -> object:
    return load_spec({"name": "imported", **raw})


def _members(tmp_path: Path, n: int = 2) -> list[str]:
    return [str(_onnx(_tiny_rgb(i), tmp_path / f"net-{i}.onnx")) for i in range(n)]


def test_onnx_files_become_a_valid_package(tmp_path):
    files = _members(tmp_path)
    spec = _spec(onnx=files, input={"mean": MEAN, "std": STD}, labels=[f"l{k}" for k in range(10)])
    manifest = import_package(spec, tmp_path / "pkg")
    assert check_package(tmp_path / "pkg") == manifest
    assert manifest["input"]["shape"] == [3, 8, 8] and manifest["input"]["channels"] == "rgb"
    assert manifest["training"] == {"method": "imported", "source": {"format": "onnx", "files": [
        {"file": f"net-{i}.onnx", "sha256": sha256_file(Path(files[i]))} for i in range(2)]}}
    assert "torch" not in manifest["export"] and "evaluation" not in manifest
    # Files with a dynamic batch and fixed C, H, W are shipped byte for byte.
    assert [m["sha256"] for m in manifest["members"]] == [sha256_file(Path(f)) for f in files]
    # Golden: the pre-processed tensor of each PNG, and onnxruntime's logits on it.
    golden = json.loads((tmp_path / "pkg" / "golden.json").read_text())["images"]
    from PIL import Image
    pixels = np.asarray(Image.open(tmp_path / "pkg" / golden[0]["file"])).transpose(2, 0, 1).astype(np.float64)
    x = ((pixels / 255 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]).astype(np.float32)
    assert np.abs(np.array(golden[0]["input"]) - x.flatten()).max() <= 1e-6
    session = ort.InferenceSession(files[1], providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x[None]})[0][0]
    assert np.abs(np.array(golden[0]["logits"][1]) - logits).max() <= 1e-5


def test_a_fixed_batch_becomes_dynamic_and_symbolic_sizes_come_from_the_contract(tmp_path):
    fixed = str(_onnx(_tiny_rgb(0), tmp_path / "fixed.onnx", dynamic_batch=False))
    model = onnx.load(str(_onnx(_tiny_rgb(1), tmp_path / "sym.onnx")))
    for d, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("h", "w")):
        d.ClearField("dim_value")
        d.dim_param = name
    onnx.save(model, str(tmp_path / "sym.onnx"))
    with pytest.raises(UserError, match=r"sym.onnx: input dims \['batch', 3, 'h', 'w'\] are not all fixed; pass --input"):
        import_package(_spec(onnx=[str(tmp_path / "sym.onnx")]), tmp_path / "pkg")
    import_package(_spec(onnx=[str(tmp_path / "sym.onnx")], input={"shape": [3, 8, 8]}), tmp_path / "pkg")
    # Or another member fixes the sizes.
    manifest = import_package(_spec(onnx=[str(tmp_path / "sym.onnx"), fixed]), tmp_path / "pkg")
    for m in manifest["members"]:
        session = ort.InferenceSession(str(tmp_path / "pkg" / m["file"]), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == ["batch", 3, 8, 8]
        assert session.run(None, {"input": np.zeros((5, 3, 8, 8), np.float32)})[0].shape == (5, 10)


def test_members_that_disagree_are_refused_naming_each_file(tmp_path):
    good = _members(tmp_path, 1)
    gray = str(_onnx(SmallCNN(1, (4, 4), 8, 10, 8).eval(), tmp_path / "gray.onnx", shape=(1, 8, 8)))
    renamed = str(_onnx(_tiny_rgb(2), tmp_path / "renamed.onnx", input_name="pixels"))
    five = str(_onnx(_tiny_rgb(3, classes=5), tmp_path / "five.onnx"))
    with pytest.raises(UserError) as err:
        import_package(_spec(onnx=[*good, gray, renamed, five]), tmp_path / "pkg")
    message = str(err.value)
    assert "gray.onnx: input dims ['batch', 1, 8, 8], net-0.onnx has ['batch', 3, 8, 8]" in message
    assert "renamed.onnx: input name 'pixels', net-0.onnx has 'input'" in message
    assert "five.onnx: output dims ['batch', 5], net-0.onnx has ['batch', 10]" in message
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("make, raw, message", [
    (lambda p: p / "absent.onnx", {}, r"absent.onnx: file not found"),
    (lambda p: (p / "junk.onnx").write_bytes(b"not a model") and p / "junk.onnx", {}, r"junk.onnx: not an ONNX model"),
    (lambda p: _onnx(_tiny_rgb(0), p / "old.onnx", opset=13), {}, r"old.onnx: opset 13; the format needs >= 17"),
    (lambda p: _onnx(_tiny_rgb(0), p / "n.onnx"), {"labels": ["a", "b"]}, r"labels: 2 labels for 10 classes"),
    (lambda p: _onnx(_tiny_rgb(0), p / "n.onnx"), {"input": {"shape": [3, 16, 16]}},
     r"n.onnx: input dims \['batch', 3, 8, 8\], the spec says \[batch, 3, 16, 16\]"),
    (lambda p: _onnx(_tiny_rgb(0), p / "n.onnx"), {"output": {"classes": 3}, "labels": ["a", "b", "c"]},
     r"n.onnx: 10 classes, the spec says 3"),
    (lambda p: _onnx(_tiny_rgb(0), p / "n.onnx"), {"input": {"mean": [0.5]}}, r"input.mean: 1 values for C=3"),
])
def test_bad_input_is_refused_with_a_clear_error(tmp_path, make, raw, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message):
        import_package(_spec(onnx=[str(path)], **raw), tmp_path / "pkg")


def test_a_failed_import_leaves_the_existing_package_alone(tmp_path):
    out = tmp_path / "pkg"
    first = import_package(_spec(onnx=_members(tmp_path)), out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError, match="junk.onnx"):
        import_package(_spec(onnx=[*_members(tmp_path), str(tmp_path / "junk.onnx")]), out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert check_package(out) == first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".pkg")) == []
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="non-empty folder without manifest.json"):
        import_package(_spec(onnx=_members(tmp_path)), tmp_path / "notes")


def _red_checkpoints(tmp_path: Path, n: int) -> list[str]:
    """Checkpoints as the public RED code saves them: {'model': state dict, 'epoch': n}, and for one
    of them the keys of a model wrapped in nn.DataParallel twice ('module.module.')."""
    paths = []
    for i in range(n):
        torch.manual_seed(10 + i)
        net = RedResNet18()
        for m in net.modules():  # statistics that make batch norm matter
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        state = net.state_dict()
        if i == 1:
            state = {f"module.module.{k}": v for k, v in state.items()}
        paths.append(str(tmp_path / f"resnet18_CIFAR10_red_n{n}_s0_{i}.pth"))
        torch.save({"model": state, "epoch": 120}, paths[-1])
    return paths


def test_red_resnet18_checkpoints_with_the_preset(tmp_path):
    """A small number of full-size members: the preset's layout, key map and contract, PyTorch
    against onnxruntime within the stated tolerance, and the package valid."""
    ckpts = _red_checkpoints(tmp_path, 2)
    spec = load_spec({"name": "red-cifar", "checkpoints": ckpts}, preset="red-resnet18")
    manifest = import_package(spec, tmp_path / "pkg")
    check_package(tmp_path / "pkg")
    assert manifest["input"]["shape"] == [3, 32, 32] and manifest["labels"][0] == "airplane"
    assert manifest["members"][0]["parameters"] == 11_174_026  # ResNet-18 (CIFAR stem with a bias)
    src = manifest["training"]["source"]
    assert src["format"] == "pytorch" and src["module"] == "redtrain.models:RedResNet18"
    assert src["stateKey"] == "model" and src["stripPrefix"] == ["module."]
    assert manifest["training"]["dataset"] == "cifar10"
    assert manifest["export"]["torch"] == torch.__version__ and manifest["export"]["parityMaxAbs"] <= 1e-4


def test_a_checkpoint_that_does_not_fit_names_its_keys(tmp_path):
    ckpts = _red_checkpoints(tmp_path, 2)
    with pytest.raises(UserError, match=r"_1.pth does not fit redtrain.models:RedResNet18: missing keys base_model"
                                        r".*unexpected keys module.module."):
        import_package(load_spec({"name": "x", "checkpoints": ckpts, "key_map": {"strip_prefix": []}},
                                 preset="red-resnet18"), tmp_path / "pkg")
    with pytest.raises(UserError, match=r"no entry 'weights' \(--state-key\); the checkpoint holds \['epoch', 'model'\]"):
        import_package(load_spec({"name": "x", "checkpoints": ckpts, "key_map": {"state_key": "weights"}},
                                 preset="red-resnet18"), tmp_path / "pkg")


def _module_file(tmp_path: Path) -> Path:
    path = tmp_path / "mynets.py"
    path.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, classes=10, width=4):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))\n"
        "        self.fc = nn.Linear(width * 14 * 14, classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.body(x).flatten(1))\n")
    return path


def _trained_members(tmp_path: Path, data, n: int = 2) -> list[str]:
    """Members of `mynets.Net` fitted a little to the synthetic set, saved as DataParallel state dicts."""
    import importlib.util
    loader = importlib.util.spec_from_file_location("mynets", _module_file(tmp_path))
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    x = (data.train.images.float() / 255 - 0.5) / 0.25
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        net = mod.Net(width=4)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), data.train.labels).backward()
            opt.step()
        paths.append(str(tmp_path / f"m{i}.pt"))
        torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, paths[-1])
    return paths


def test_module_and_checkpoints_then_evaluate_in_pixel_space(tmp_path):
    """A normalising contract (mean 0.5, std 0.25): the package's golden and accuracy follow it, and
    evaluate attacks through it, its eps in pixel space."""
    data = synthetic_dataset(n_train=128, n_test=16)
    ckpts = _trained_members(tmp_path, data)
    spec = _spec(module=f"{tmp_path / 'mynets.py'}:Net", module_kwargs={"width": 4}, checkpoints=ckpts,
                 key_map={"strip_prefix": ["module."]}, input={"shape": [1, 28, 28], "mean": [0.5], "std": [0.25]},
                 dataset="fashion-mnist")
    manifest = import_package(spec, tmp_path / "pkg", data=data)
    check_package(tmp_path / "pkg")
    assert manifest["evaluation"]["examples"] == 16 and manifest["evaluation"]["randomDrawAccuracy"] > 0.5
    target = load_target(str(tmp_path / "pkg"))
    u = data.test.images[:4].float() / 255
    # Members take pixels in [0, 1]: the same answer as onnxruntime on (u - 0.5) / 0.25.
    assert check_parity(target, u) <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "pkg" / "member-0.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(target.members[0](u).numpy() - session.run(None, {"input": ((u - 0.5) / 0.25).numpy()})[0]).max() <= 1e-4
    report = run_evaluation([str(tmp_path / "pkg")], tmp_path / "eval", TINY_EVAL, "test", progress=False, data=data)
    result = json.loads((report.parent / "robustness.json").read_text())["results"][0]
    worst = result["attacks"]["adaptive (worst of the above, per example)"]["expected"]
    assert 0 <= worst <= result["clean"]["expected"]


def test_rgb_package_with_mean_and_std_evaluates(tmp_path):
    """A non-Fashion-MNIST shape: 3x8x8 ONNX members with a normalising contract."""
    data = synthetic_dataset(n_train=8, n_test=8, channels=3, size=8)
    spec = _spec(onnx=_members(tmp_path), input={"mean": MEAN, "std": STD}, dataset="fashion-mnist")
    manifest = import_package(spec, tmp_path / "pkg", data=data)
    assert manifest["evaluation"]["examples"] == 8
    run_evaluation([str(tmp_path / "pkg")], tmp_path / "eval", TINY_EVAL, "test", progress=False, data=data)
    assert (tmp_path / "eval" / "robustness.md").is_file()


def test_torchscript_module(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(1, (4, 4), 8, 10, 8).eval()
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    ckpts = []
    for i in range(2):
        torch.manual_seed(i + 1)
        ckpts.append(str(tmp_path / f"c{i}.pt"))
        torch.save(SmallCNN(1, (4, 4), 8, 10, 8).state_dict(), ckpts[-1])
    manifest = import_package(_spec(torchscript=str(tmp_path / "net.ts"), checkpoints=ckpts,
                                    input={"shape": [1, 8, 8]}), tmp_path / "pkg")
    assert manifest["training"]["source"]["format"] == "torchscript"
    assert manifest["members"][0]["sha256"] != manifest["members"][1]["sha256"]


def test_the_command_line_and_a_yaml_spec(tmp_path, capsys):
    _members(tmp_path)
    (tmp_path / "spec.yaml").write_text(
        "name: from-yaml\nonnx: [net-0.onnx, net-1.onnx]\n"
        "input: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], resize: {fit: cover}}\n")
    out = tmp_path / "pkg"
    assert main(["import", "--config", str(tmp_path / "spec.yaml"), "--out", str(out), "--version", "2.0.0",
                 "--labels", ",".join(f"c{k}" for k in range(10))]) == 0
    m = check_package(out)
    assert (m["name"], m["version"], m["input"]["resize"]["fit"], m["labels"][3]) == ("from-yaml", "2.0.0", "cover", "c3")
    assert main(["validate", str(out)]) == 0
    assert main(["import", "--name", "x", "--out", str(tmp_path / "p2"), "--onnx", str(tmp_path / "net-0.onnx"),
                 "--labels", "a,b"]) == 2
    assert "labels: 2 labels for 10 classes" in capsys.readouterr().err
    assert main(["import", "--name", "x", "--out", str(tmp_path / "p2")]) == 2
    assert "no members: give ONNX files" in capsys.readouterr().err
