"""Benchmark packages (`redtrain bench-package`): real architectures with seeded random weights,
written as valid packages, never over anything but another benchmark package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from redtrain.benchpkg import BenchSpec, write_bench_package
from redtrain.cli import main
from redtrain.errors import UserError
from redtrain.manifest import check_package
from redtrain.models import ResNet18, ResNet20, count_parameters

TINY = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "tiny-ensemble"
R20X2 = BenchSpec("resnet20", 2, 0, (3, 32, 32))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "r20x2"
    manifest, written = write_bench_package(R20X2, out)
    assert written
    return out, manifest


def test_parameter_counts_are_those_of_the_architectures():
    assert count_parameters(ResNet20()) == 272_474
    assert count_parameters(ResNet18()) == 11_173_962  # built, not exported: 45 MB of ONNX per member


def test_the_package_is_valid_and_marked_as_random_weights(package, capsys):
    out, manifest = package
    assert main(["validate", str(out)]) == 0
    assert "valid ensemble package 'bench-resnet20x2' with 2 members" in capsys.readouterr().out
    assert manifest["benchmark"] == {"randomWeights": True, "arch": "resnet20", "seed": 0}
    assert "evaluation" not in manifest
    assert [m["parameters"] for m in manifest["members"]] == [272_474, 272_474]
    assert manifest["members"][0]["sha256"] != manifest["members"][1]["sha256"]


def test_golden_logits_reproduce_with_onnxruntime(package):
    out, manifest = package
    images = json.loads((out / "golden.json").read_text())["images"]
    assert len(images) == 4
    worst = 0.0
    for img in images:
        pixels = np.asarray(Image.open(out / img["file"]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        assert np.abs(pixels.flatten() - np.array(img["input"])).max() <= 1e-6
        for member, expected in zip(manifest["members"], img["logits"]):
            session = ort.InferenceSession(str(out / member["file"]), providers=["CPUExecutionProvider"])
            got = session.run(["logits"], {"input": pixels[None]})[0][0]
            worst = max(worst, float(np.abs(got - np.array(expected)).max()))
    assert worst <= manifest["golden"]["atol"]
    # Calibrated batch norms keep logits at a trained network's scale, not vanishing.
    assert 0.1 < max(abs(v) for v in images[0]["logits"][0]) < 100


def test_member_i_depends_on_seed_and_index_only_and_a_rerun_is_a_no_op(package, tmp_path, capsys):
    _, manifest = package
    out = tmp_path / "r20x1"
    one, written = write_bench_package(BenchSpec("resnet20", 1, 0, (3, 32, 32)), out)
    assert written and one["members"][0]["sha256"] == manifest["members"][0]["sha256"]
    before = (out / "manifest.json").stat().st_ino
    args = ["bench-package", "--arch", "resnet20", "--members", "1", "--seed", "0", "--out", str(out)]
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_ino == before
    assert main([*args, "--force"]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    assert check_package(out)["members"][0]["sha256"] == one["members"][0]["sha256"]  # rebuilt, byte for byte
    other, written = write_bench_package(BenchSpec("resnet20", 1, 1, (3, 32, 32)), out)
    assert written and other["members"][0]["sha256"] != one["members"][0]["sha256"]


def test_gray_input_and_other_class_counts(tmp_path):
    manifest, _ = write_bench_package(BenchSpec("resnet20", 1, 3, (1, 16, 16), classes=3), tmp_path / "gray")
    assert manifest["input"]["channels"] == "gray" and manifest["input"]["shape"] == [1, 16, 16]
    assert manifest["labels"] == ["class-0", "class-1", "class-2"]
    assert Image.open(tmp_path / "gray" / "golden" / "0.png").mode == "L"


def test_never_overwrites_what_is_not_a_benchmark_package(tmp_path):
    trained = tmp_path / "trained"
    shutil.copytree(TINY, trained)
    files = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="not a benchmark package"):
        write_bench_package(R20X2, trained, force=True)
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == files
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(UserError, match="non-empty folder without manifest.json"):
        write_bench_package(R20X2, other)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_bench_package(R20X2, tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes", "trained"]  # no temporary left


@pytest.mark.parametrize("flags, message", [
    (["--arch", "vgg16"], "--arch: 'vgg16' is not one of resnet20, resnet18"),
    (["--members", "0"], "--members: 0 must be at least 1"),
    (["--input", "3x32"], "--input: expected CxHxW with C 1 (gray) or 3 (rgb) and H, W in [8, 1024], got '3x32'"),
    (["--input", "2x32x32"], "got '2x32x32'"),
    (["--classes", "1"], "--classes: 1 must be at least 2"),
])
def test_user_errors_name_the_flag_and_its_range(flags, message, tmp_path, capsys):
    args = {"--arch": "resnet20", "--members": "2", "--seed": "0", "--out": str(tmp_path / "p")}
    args.update(dict(zip(flags[::2], flags[1::2])))
    assert main(["bench-package", *[x for kv in args.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
