import json

import numpy as np
import onnx
import pytest
import torch

from conftest import synthetic_dataset, tiny_config
from redtrain.config import config_from_dict
from redtrain.errors import UserError
from redtrain.export import export_package
from redtrain.manifest import check_package, validate_manifest
from redtrain.models import build_member, count_parameters
from redtrain.psred import HyperEnsemble
from redtrain.psred_export import member_weights, target_logits
from redtrain.objective import loss_terms
from redtrain.ensemble import build_ensemble
from redtrain.runs import load_run
from redtrain.train import parameter_groups, train


def shipped_like(members=5):
    return config_from_dict({"name": "p", "method": "ps-red", "members": members,
                             "model": {"arch": "cnn-small", "widths": [12, 24, 48], "hidden": 64}})


def test_generated_tensors_match_the_member_architecture():
    cfg = shipped_like()
    hyper = HyperEnsemble(cfg, 10)
    reference = dict(build_member(cfg.model, 10).named_parameters())
    for i in range(cfg.members):
        params = hyper.generate(i)
        assert set(params) == set(reference)
        for name, p in reference.items():
            assert params[name].shape == p.shape, name


def test_parameter_count_is_under_ten_percent_of_independent_members():
    cfg = shipped_like()
    hyper = HyperEnsemble(cfg, 10)
    report = hyper.parameter_report()
    member = count_parameters(build_member(cfg.model, 10))
    assert report["independentMembers"] == 5 * member
    assert report["total"] == count_parameters(hyper)
    assert report["total"] <= 0.10 * report["independentMembers"], report
    # one more member costs its embedding and its biases only
    six = HyperEnsemble(shipped_like(members=6), 10).parameter_report()
    assert six["total"] - report["total"] == cfg.hypernet.member_dim + report["directPerMember"]


def test_members_differ_and_start_at_a_sane_scale():
    torch.manual_seed(0)
    hyper = HyperEnsemble(shipped_like(), 10)
    x = torch.rand(8, 1, 28, 28)
    outs = [m(x) for m in hyper.members()]
    assert not torch.allclose(outs[0], outs[1])
    assert all(torch.isfinite(o).all() and o.abs().max() < 100 for o in outs)


def test_gradients_reach_the_shared_generator_and_embeddings():
    hyper = HyperEnsemble(shipped_like(), 10)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(hyper.members()[2](x), y).backward()
    assert hyper.generator[0].weight.grad.abs().sum() > 0
    assert hyper.chunk_embedding.grad.abs().sum() > 0
    assert hyper.member_embedding.grad[2].abs().sum() > 0
    assert hyper.member_embedding.grad[0].abs().sum() == 0  # member 0 took no part


def test_standalone_member_equals_the_generated_one():
    hyper = HyperEnsemble(shipped_like(), 10).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        for i in range(5):
            assert torch.allclose(hyper.member_module(i)(x), hyper.forward_member(i, x), atol=1e-6)


@pytest.fixture(scope="module")
def psred_package(tmp_path_factory):
    """A tiny PS-RED run, trained for one epoch and exported: (config, package folder)."""
    tmp = tmp_path_factory.mktemp("psred")
    cfg = tiny_config(method="ps-red")
    data = synthetic_dataset(n_train=64, n_test=32)
    train(cfg, tmp / "run", dataset=data, progress=False)
    _, hyper, _ = load_run(tmp / "run")
    return cfg, export_package(cfg, hyper, tmp / "pkg", data)


def test_ps_red_trains_with_the_red_losses(dataset):
    cfg = tiny_config(method="ps-red")
    ens = build_ensemble(cfg, 10)
    x, y = dataset.train.images[:16].float() / 255, dataset.train.labels[:16]
    terms = loss_terms(ens.members(), x, y, cfg, torch.Generator().manual_seed(0))
    assert {"ce", "sim", "lip", "loss"} <= set(terms)
    terms["loss"].backward()
    assert ens.generator[0].weight.grad is not None


def _worst_golden_error(pkg, manifest, members):
    """Largest difference between golden.json's logits and hypernet.onnx + target.onnx in onnxruntime."""
    layout = manifest["target"]["tensors"]
    golden = json.loads((pkg / "golden.json").read_text())
    worst = 0.0
    for i in range(members):
        weights = member_weights(pkg / "hypernet.onnx", i, layout)
        for item in golden["images"]:
            x = np.array(item["input"], dtype=np.float32).reshape(1, 1, 28, 28)
            worst = max(worst, float(np.abs(target_logits(pkg / "target.onnx", weights, x)[0] - item["logits"][i]).max()))
    return worst


def test_ps_red_package_hypernet_and_target_match_pytorch(psred_package):
    cfg, pkg = psred_package
    manifest = check_package(pkg)
    assert manifest["kind"] == "ps-red" and len(manifest["members"]) == cfg.members
    assert sorted(p.name for p in pkg.glob("*.onnx")) == ["hypernet.onnx", "target.onnx"]
    assert not (pkg / manifest["target"]["externalData"]).exists()  # weights are generated, never shipped
    assert _worst_golden_error(pkg, manifest, cfg.members) <= 1e-4
    report = manifest["hypernet"]["parameterReport"]
    assert report["total"] == manifest["hypernet"]["parameters"]


def test_ps_red_manifest_problems_are_named(psred_package):
    _, pkg = psred_package
    m = json.loads((pkg / "manifest.json").read_text())
    m["target"]["tensors"][1]["offset"] += 4
    m["members"][0]["index"] = 3
    del m["hypernet"]["input"]
    problems = validate_manifest(m)
    assert any("target.tensors[1]" in p and "contiguous" in p for p in problems)
    assert any(p.startswith("members[0]") for p in problems)
    assert any(p.startswith("hypernet.input") for p in problems)


def test_float16_storage_halves_the_hypernet_and_serves_what_pytorch_computes(tmp_path):
    data = synthetic_dataset(n_train=64, n_test=32)
    cfg = tiny_config(method="ps-red", hypernet={"storage": "float16"})
    ens = build_ensemble(cfg, 10)
    pkg = export_package(cfg, ens, tmp_path / "pkg", data)
    manifest = check_package(pkg)
    assert manifest["hypernet"]["storage"] == "float16"
    model = onnx.load(str(pkg / "hypernet.onnx"))
    assert {i.data_type for i in model.graph.initializer if i.dims} == {onnx.TensorProto.FLOAT16}
    # Export rounded the parameters in place: PyTorch now computes what the package serves.
    assert all(torch.equal(p, p.half().float()) for p in ens.parameters())
    assert _worst_golden_error(pkg, manifest, cfg.members) <= 1e-4
    full = export_package(tiny_config(method="ps-red"), build_ensemble(tiny_config(method="ps-red"), 10), tmp_path / "f32", data)
    assert (pkg / "hypernet.onnx").stat().st_size < 0.75 * (full / "hypernet.onnx").stat().st_size


def test_unknown_hypernet_storage_is_named():
    with pytest.raises(UserError, match="hypernet.storage: 'int8' is not one of float32, float16"):
        tiny_config(method="ps-red", hypernet={"storage": "int8"})


def test_member_gains_scale_output_channels_and_are_exported(tmp_path):
    """hypernet.member_gains: one direct gain per output channel per member, exported inside the
    hypernetwork, so the package serves what PyTorch computes."""
    cfg = tiny_config(method="ps-red", hypernet={"member_gains": True})
    ens = build_ensemble(cfg, 10)
    plain = build_ensemble(tiny_config(method="ps-red"), 10)
    out_channels = sum(s.shape[0] for s in ens.generated)
    assert ens.parameter_report()["total"] - plain.parameter_report()["total"] == cfg.members * out_channels
    with torch.no_grad():
        before = ens.generate(1)
        ens.gains[1, ens.gain_offsets[0]] = 3.0  # the first output channel of the first generated tensor
        after = ens.generate(1)
    first = ens.generated[0].name
    assert torch.allclose(after[first][0], 3 * before[first][0])
    assert torch.equal(after[first][1:], before[first][1:])
    pkg = export_package(cfg, ens, tmp_path / "pkg", synthetic_dataset(n_train=64, n_test=32))
    assert _worst_golden_error(pkg, check_package(pkg), cfg.members) <= 1e-4


def test_member_scale_starts_as_the_plain_generator_and_is_exported(tmp_path):
    """hypernet.member_scale: the member embedding also scales the generator's hidden layer. It starts
    at zero, so a fresh ensemble generates what the plain generator would from the same weights; once
    trained it changes members apart from the shared shift, and the export carries it."""
    cfg = tiny_config(method="ps-red", hypernet={"member_scale": True})
    torch.manual_seed(0)
    ens = build_ensemble(cfg, 10)
    torch.manual_seed(0)
    plain = build_ensemble(tiny_config(method="ps-red"), 10)
    hidden, member_dim = cfg.hypernet.hidden, cfg.hypernet.member_dim
    assert ens.parameter_report()["total"] - plain.parameter_report()["total"] == hidden * member_dim
    assert ens.parameter_report()["total"] == count_parameters(ens)
    for name, value in plain.generate(1).items():
        assert torch.allclose(ens.generate(1)[name], value, atol=1e-6), name
    with torch.no_grad():
        ens.member_scale.weight.normal_(std=0.1)
        z = ens.member_embedding[1]
        features = ens.generator[1](ens.generator[0](torch.cat([z.expand(ens.n_chunks, -1), ens.chunk_embedding], 1)))
        expected = ens.generator[2](features * (1 + ens.member_scale(z))).flatten()[: ens.generated_numel]
    first = ens.generated[0]
    generated = ens.generate(1)[first.name].detach()
    assert torch.allclose(generated.flatten(), expected[: first.numel] * first.scale, atol=1e-6)
    assert not torch.allclose(generated, plain.generate(1)[first.name].detach(), atol=1e-3)
    pkg = export_package(cfg, ens, tmp_path / "pkg", synthetic_dataset(n_train=64, n_test=32))
    assert _worst_golden_error(pkg, check_package(pkg), cfg.members) <= 1e-4


def test_embedding_lr_scale_puts_the_embeddings_in_their_own_group():
    cfg = tiny_config(method="ps-red", hypernet={"embedding_lr_scale": 10.0})
    ens = build_ensemble(cfg, 10)
    groups = parameter_groups(ens, cfg)
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(10 * cfg.optim.lr)
    assert {id(p) for p in groups[1]["params"]} == {id(ens.chunk_embedding), id(ens.member_embedding)}
    assert len(groups[0]["params"]) + 2 == len(list(ens.parameters()))
    # the default, and methods without embeddings, keep one group
    assert len(parameter_groups(ens, tiny_config(method="ps-red"))) == 1
    assert len(parameter_groups(build_ensemble(tiny_config(), 10), tiny_config())) == 1
    with pytest.raises(UserError, match="embedding_lr_scale"):
        tiny_config(method="ps-red", hypernet={"embedding_lr_scale": 0})


@pytest.mark.parametrize("hypernet", [{"per_member": True, "member_dim": 2, "chunk_dim": 4, "hidden": 8},
                                      {"adapter_rank": 2}], ids=["per-member", "adapter"])
def test_member_specific_generators_differ_per_member_and_are_exported(tmp_path, hypernet):
    """hypernet.per_member (one generator per member) and hypernet.adapter_rank (per-member low-rank
    adapters on the shared generator): every member's generated tensors come from its own parameters,
    the stacked generation equals generate(i), and the package serves what PyTorch computes."""
    cfg = tiny_config(method="ps-red", hypernet=hypernet)
    ens = build_ensemble(cfg, 10)
    assert ens.parameter_report()["total"] == count_parameters(ens)
    with torch.no_grad():
        if ens.adapter_a is not None:
            ens.adapter_a.normal_(std=0.3)  # trained adapters are non-zero; at init they add nothing
        stacked = ens.stacked_params()
        for i in range(cfg.members):
            for name, value in ens.generate(i).items():
                assert torch.allclose(stacked[name][i], value, atol=1e-6), (i, name)
        # Changing member 1's own parameters changes member 1 only.
        own = ens.gen_w2 if ens.per_member else ens.adapter_b
        before = {i: ens.generate(i) for i in range(cfg.members)}
        own[1].mul_(2.0)
        first = ens.generated[0].name
        assert not torch.allclose(ens.generate(1)[first], before[1][first])
        assert torch.equal(ens.generate(0)[first], before[0][first])
    pkg = export_package(cfg, ens, tmp_path / "pkg", synthetic_dataset(n_train=64, n_test=32))
    assert _worst_golden_error(pkg, check_package(pkg), cfg.members) <= 1e-4


def test_per_member_generators_refuse_shared_generator_options():
    with pytest.raises(UserError, match="hypernet.per_member"):
        tiny_config(method="ps-red", hypernet={"per_member": True, "adapter_rank": 2})


def test_strided_members_are_generated_and_exported(tmp_path):
    # The published small CNN as PS-RED members: generated tensors match the architecture, and the
    # exported hypernetwork reproduces the members (export checks parity itself).
    cfg = tiny_config(method="ps-red", model={"arch": "cnn-strided", "widths": [4, 6], "hidden": 8},
                      loss={"l_sim": 0.0, "l_lip": 0.0})
    hyper = HyperEnsemble(cfg, 10)
    reference = dict(build_member(cfg.model, 10).named_parameters())
    assert {n: p.shape for n, p in hyper.generate(1).items()} == {n: p.shape for n, p in reference.items()}
    data = synthetic_dataset()
    manifest = check_package(export_package(cfg, hyper, tmp_path / "pkg", data))
    assert manifest["kind"] == "ps-red" and len(manifest["members"]) == cfg.members
