"""Import an ensemble trained elsewhere as a redserve model package (docs/import.md).

Steps:
  1. read the import spec (command-line flags over an optional YAML file, over a preset) and check
     it, every problem at once;
  2. members: read N ONNX files as they are; or build the PyTorch module once per checkpoint (the
     checkpoint's keys mapped by the key map), export it to ONNX in a temporary sibling folder of
     the package and check it against PyTorch with onnxruntime;
  3. check every member's ONNX signature against the input contract and against the first member,
     naming each file that differs and how; fix symbolic C, H, W to the contract and a fixed batch
     size to a dynamic axis, then prove the batch axis by running a batch against single images;
  4. golden images (the test set's first images when a dataset is given, seeded noise otherwise)
     and every member's logits on them, by onnxruntime;
  5. with a dataset, every member's clean test accuracy (onnxruntime);
  6. write manifest.json, validate the whole package, swap the temporary folder into place. Any
     failure before step 6 leaves an existing package as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import math
import re
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from torch import nn

from redtrain.config import from_dict
from redtrain.data import CIFAR10_LABELS, Dataset, load_dataset
from redtrain.ensemble import accuracy
from redtrain.errors import UserError
from redtrain.export import GOLDEN_ATOL, PARITY_ATOL, check_parity, export_record, finish_package
from redtrain.golden import GOLDEN_IMAGES, write_golden
from redtrain.manifest import sha256_file
from redtrain.models import count_parameters
from redtrain.onnx_export import export_onnx
from redtrain.package import PixelInput, input_mapping
from redtrain.provenance import git_commit, staging_folder

MIN_OPSET = 17  # docs/model-format.md
FITS = ("fill", "contain", "cover")
KERNELS = ("nearest", "linear", "cubic", "lanczos3")
# Tried in this order when a checkpoint is a dict that holds the state dict under a key.
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Batch size of the check that a member's batch axis is really dynamic.
BATCH_PROBE = 3


@dataclass(frozen=True)
class ResizeSpec:
    fit: str = "contain"
    kernel: str = "linear"
    background: float = 0.0


@dataclass(frozen=True)
class InputContract:
    """What the service feeds the members: docs/model-format.md, *input*. Unset values come from
    the ONNX files (name, shape) or the defaults (scale 1/255, mean 0, std 1)."""

    name: typing.Optional[str] = None
    shape: typing.Optional[typing.Tuple[int, ...]] = None
    channels: typing.Optional[str] = None
    scale: float = 1 / 255
    mean: typing.Optional[typing.Tuple[float, ...]] = None
    std: typing.Optional[typing.Tuple[float, ...]] = None
    resize: ResizeSpec = ResizeSpec()


@dataclass(frozen=True)
class OutputContract:
    name: typing.Optional[str] = None
    classes: typing.Optional[int] = None


@dataclass(frozen=True)
class KeyMap:
    """How a checkpoint's keys become the module's: `state_key` picks the state dict inside the
    checkpoint (default: the checkpoint itself, or the first of STATE_KEYS it holds); every prefix
    in `strip_prefix` is removed, repeatedly (DataParallel's `module.`, wrapped twice, is
    `module.module.`); then the first `rename_prefix` entry 'OLD=NEW' whose OLD starts the key
    replaces it."""

    state_key: typing.Optional[str] = None
    strip_prefix: typing.Tuple[str, ...] = ()
    rename_prefix: typing.Tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportSpec:
    """Everything `redtrain import` needs: the members' source and the package's contract. Relative
    paths in a YAML spec are relative to that file."""

    name: str
    version: str = "1.0.0"
    description: typing.Optional[str] = None
    onnx: typing.Tuple[str, ...] = ()
    module: typing.Optional[str] = None  # 'package.module:Class' or 'path/to/file.py:Class'
    module_kwargs: dict = field(default_factory=dict)
    torchscript: typing.Optional[str] = None
    checkpoints: typing.Tuple[str, ...] = ()
    key_map: KeyMap = KeyMap()
    input: InputContract = InputContract()
    output: OutputContract = OutputContract()
    labels: typing.Optional[typing.Tuple[str, ...]] = None
    dataset: typing.Optional[str] = None  # what the members were trained on; recorded for `evaluate`
    data_root: typing.Optional[str] = None  # with `dataset`: golden images and accuracy from its test set
    test_limit: typing.Optional[int] = None

    @property
    def source_format(self) -> str:
        return "onnx" if self.onnx else ("torchscript" if self.torchscript else "pytorch")

    def problems(self) -> list[str]:
        """Every way the spec cannot make a package, each naming its flag or key."""
        out = []
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.name):
            out.append(f"name: '{self.name}' must match [a-z0-9][a-z0-9._-]* (it is the served model name)")
        torch_source = self.module is not None or self.torchscript is not None
        if self.onnx and (torch_source or self.checkpoints):
            out.append("give either ONNX files (--onnx) or a module with checkpoints (--module/--torchscript and "
                       "--checkpoint), not both")
        elif not self.onnx and not torch_source:
            out.append("no members: give ONNX files (--onnx FILE ...) or a module (--module or --torchscript) "
                       "with --checkpoint FILE ...")
        elif torch_source:
            if self.module is not None and self.torchscript is not None:
                out.append("give --module or --torchscript, not both")
            if not self.checkpoints:
                out.append("a module needs checkpoints: --checkpoint FILE, one per member")
            if self.input.shape is None:
                out.append("input.shape: a module's input size is not in any file; pass --input CxHxW")
        for f in (*self.onnx, *self.checkpoints, *([self.torchscript] if self.torchscript else [])):
            if not Path(f).is_file():
                out.append(f"{f}: file not found")
        for entry in self.key_map.rename_prefix:
            if "=" not in entry or not entry.split("=", 1)[0]:
                out.append(f"key_map.rename_prefix: '{entry}' is not OLD=NEW")
        out += _contract_problems(self)
        if self.data_root is not None and self.dataset is None:
            out.append("data_root: given without dataset (--dataset NAME)")
        if self.test_limit is not None and self.test_limit < 1:
            out.append(f"test_limit: {self.test_limit} must be at least 1")
        return out


def _contract_problems(spec: ImportSpec) -> list[str]:
    inp, out = spec.input, spec.output
    problems = []
    c = None
    if inp.shape is not None:
        if len(inp.shape) != 3 or not all(d >= 1 for d in inp.shape):
            problems.append(f"input.shape: expected [C, H, W] of positive integers, got {list(inp.shape)}")
        elif inp.shape[0] not in (1, 3):
            problems.append(f"input.shape: C={inp.shape[0]}, the service feeds 1 (gray) or 3 (rgb) channels")
        else:
            c = inp.shape[0]
    if inp.channels is not None and inp.channels not in ("gray", "rgb"):
        problems.append(f"input.channels: '{inp.channels}' is not gray or rgb")
    elif inp.channels is not None and c is not None and c != (1 if inp.channels == "gray" else 3):
        problems.append(f"input.channels: '{inp.channels}' does not match C={c}")
    if not (inp.scale > 0 and math.isfinite(inp.scale)):
        problems.append(f"input.scale: {inp.scale} must be a number > 0")
    for key in ("mean", "std"):
        values = getattr(inp, key)
        if values is not None and c is not None and len(values) != c:
            problems.append(f"input.{key}: {len(values)} values for C={c}")
    if inp.std is not None and not all(s > 0 for s in inp.std):
        problems.append(f"input.std: {list(inp.std)} must all be > 0")
    if inp.resize.fit not in FITS:
        problems.append(f"input.resize.fit: '{inp.resize.fit}' is not one of {', '.join(FITS)}")
    if inp.resize.kernel not in KERNELS:
        problems.append(f"input.resize.kernel: '{inp.resize.kernel}' is not one of {', '.join(KERNELS)}")
    if not 0 <= inp.resize.background <= 255:
        problems.append(f"input.resize.background: {inp.resize.background} is not in [0, 255]")
    if out.classes is not None and out.classes < 1:
        problems.append(f"output.classes: {out.classes} must be at least 1")
    if spec.labels is not None and out.classes is not None and len(spec.labels) != out.classes:
        problems.append(f"labels: {len(spec.labels)} labels for {out.classes} classes")
    return problems


# A preset fills what a known layout implies; the spec and the flags override any of it.
PRESETS: dict[str, dict] = {
    # The public RED code's CIFAR-10 members: one file per member holding {'model': state dict,
    # 'epoch': n}, saved from nn.DataParallel (keys may start with 'module.'); [0, 1] RGB input,
    # normalised inside the network (docs/import.md).
    "red-resnet18": {
        "module": "redtrain.models:RedResNet18", "module_kwargs": {"classes": 10},
        "key_map": {"state_key": "model", "strip_prefix": ["module."]},
        "input": {"shape": [3, 32, 32]}, "labels": list(CIFAR10_LABELS), "dataset": "cifar10",
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "module_kwargs" else v
    return out


def _relative_to(raw: dict, folder: Path) -> dict:
    """Paths in a YAML spec are relative to its folder."""
    out = dict(raw)
    for key in ("onnx", "checkpoints"):
        if isinstance(out.get(key), list):
            out[key] = [str(folder / p) for p in out[key]]
    for key in ("torchscript", "data_root"):
        if isinstance(out.get(key), str):
            out[key] = str(folder / out[key])
    return out


def load_spec(overrides: dict, config: str | Path | None = None, preset: str | None = None) -> ImportSpec:
    """The spec from a preset, then a YAML file, then `overrides` (the flags), each over the last."""
    raw: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"--preset: '{preset}' is not one of {', '.join(PRESETS)}")
        raw = copy.deepcopy(PRESETS[preset])
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise UserError(f"import spec not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"import spec {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"import spec {path}: expected a mapping at the top level")
        raw = _merge(raw, _relative_to(loaded, path.parent))
    raw = _merge(raw, overrides)
    if "name" not in raw:
        raise UserError("name: missing (--name NAME or 'name:' in the spec); it is the served model name")
    spec = typing.cast(ImportSpec, from_dict(ImportSpec, raw))
    problems = spec.problems()
    if problems:
        raise UserError("cannot import: " + "; ".join(problems))
    return spec


# ---------------------------------------------------------------------------------------------
# PyTorch sources


def _module_factory(spec: ImportSpec) -> Callable[[], nn.Module]:
    """A function that builds one fresh, untrained member."""
    if spec.torchscript is not None:
        path = spec.torchscript
        try:
            torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError or pickle errors here
            raise UserError(f"{path}: not a TorchScript file ({str(exc).splitlines()[0]})") from None
        return lambda: torch.jit.load(path, map_location="cpu")
    target, sep, cls_name = (spec.module or "").rpartition(":")
    if not sep or not target or not cls_name:
        raise UserError(f"--module: expected 'package.module:Class' or 'path/file.py:Class', got '{spec.module}'")
    try:
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise UserError(f"--module: {target} not found")
            loader = importlib.util.spec_from_file_location(Path(target).stem, target)
            mod = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
    except ImportError as exc:
        raise UserError(f"--module: cannot import {target}: {exc}") from None
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise UserError(f"--module: {target} has no attribute {cls_name}")

    def build() -> nn.Module:
        try:
            module = cls(**spec.module_kwargs)
        except TypeError as exc:
            raise UserError(f"--module {spec.module} with kwargs {spec.module_kwargs}: {exc}") from None
        if not isinstance(module, nn.Module):
            raise UserError(f"--module {spec.module} built a {type(module).__name__}, not a torch.nn.Module")
        return module

    build()
    return build


def _state_dict(path: str, key_map: KeyMap) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, keys mapped. Loaded with weights_only: a checkpoint from
    elsewhere runs no code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many kinds
        raise UserError(f"{path}: not a PyTorch checkpoint that loads with weights_only=True "
                        f"({str(exc).splitlines()[0]})") from None
    is_state = lambda o: isinstance(o, dict) and o and all(isinstance(v, torch.Tensor) for v in o.values())  # noqa: E731
    if key_map.state_key is not None:
        if not isinstance(obj, dict) or key_map.state_key not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else []
            raise UserError(f"{path}: no entry '{key_map.state_key}' (--state-key); the checkpoint holds {keys}")
        obj = obj[key_map.state_key]
    elif not is_state(obj) and isinstance(obj, dict):
        obj = next((obj[k] for k in STATE_KEYS if is_state(obj.get(k))), obj)
    if not is_state(obj):
        held = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path}: no state dict of tensors found (holds {held}); name its entry with --state-key")
    renames = [tuple(r.split("=", 1)) for r in key_map.rename_prefix]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        new = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in key_map.strip_prefix:
                if prefix and new.startswith(prefix):
                    new, stripped = new[len(prefix):], True
        for old, repl in renames:
            if new.startswith(old):
                new = repl + new[len(old):]
                break
        if new in mapped:
            raise UserError(f"{path}: keys map to '{new}' twice after the key map; check --strip-prefix/--rename-prefix")
        mapped[new] = value
    return mapped


def _few(keys: typing.Iterable[str], n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_checkpoint(module: nn.Module, path: str, key_map: KeyMap, what: str) -> nn.Module:
    """`module` with the checkpoint's weights; refuses, naming the keys, a checkpoint that does not fit."""
    state = _state_dict(path, key_map)
    expected = module.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    shapes = [f"{k} {list(state[k].shape)} (module: {list(expected[k].shape)})" for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = ([f"missing keys {_few(missing)}"] if missing else []) + \
                ([f"unexpected keys {_few(unexpected)}"] if unexpected else []) + \
                ([f"other shapes: {'; '.join(shapes[:5])}"] if shapes else [])
        raise UserError(f"{path} does not fit {what}: {'; '.join(parts)} "
                        "(map the keys with --strip-prefix / --rename-prefix, or name the entry with --state-key)")
    module.load_state_dict(state)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# ONNX members


@dataclass
class Member:
    """One member's ONNX model as read (and, once checked, as it will be written)."""

    source: Path
    model: onnx.ModelProto
    changed: bool = False  # whether the graph was edited (so the file is rewritten, not copied)
    # How errors name it: the file name, or the path as given when two members share a file name
    # (run1/model.onnx, run2/model.onnx).
    label_by_path: bool = False

    @property
    def label(self) -> str:
        return str(self.source) if self.label_by_path else self.source.name


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """Each axis as an int, or its symbolic name ('?' when it has none)."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _type_name(value_info: onnx.ValueInfoProto) -> str:
    return onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type).lower()


def read_onnx(path: Path) -> Member:
    """Load and check one ONNX file; refuses what no member can be."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise UserError(f"{path}: weights stored as ONNX external data; save the model as one file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0]})") from None
    return Member(path, model)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _graph_io(member: Member) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    initializers = {i.name for i in member.model.graph.initializer}
    return [i for i in member.model.graph.input if i.name not in initializers], list(member.model.graph.output)


def _signature(member: Member) -> tuple[dict, list[str]]:
    """What a member's file says of its input and output, and its problems on its own."""
    inputs, outputs = _graph_io(member)
    problems = []
    if len(inputs) != 1 or len(outputs) != 1:
        problems.append(f"{member.label}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}) and {len(outputs)} "
                        f"outputs ({', '.join(o.name for o in outputs)}); a member has exactly one of each")
        return {}, problems
    inp, out = inputs[0], outputs[0]
    sig = {"input name": inp.name, "input type": _type_name(inp), "input dims": _dims(inp),
           "output name": out.name, "output type": _type_name(out), "output dims": _dims(out),
           "opset": _opset(member.model)}
    if sig["input type"] != "float" or sig["output type"] != "float":
        problems.append(f"{member.label}: input {sig['input type']}, output {sig['output type']}; members take and "
                        "return float32")
    if len(sig["input dims"]) != 4:
        problems.append(f"{member.label}: input dims {sig['input dims']}; a member takes [batch, C, H, W]")
    if len(sig["output dims"]) != 2:
        problems.append(f"{member.label}: output dims {sig['output dims']}; a member returns [batch, classes]")
    if sig["opset"] < MIN_OPSET:
        problems.append(f"{member.label}: opset {sig['opset']}; the format needs >= {MIN_OPSET} "
                        "(re-export it, or convert it with onnx.version_converter)")
    return sig, problems


def _resolve(members: list[Member], spec: ImportSpec) -> tuple[str, str, tuple[int, int, int], int | None]:
    """The members' common input name, output name, [C, H, W] and (when the files state it) class
    count; every member that departs from the first or from the contract is named with how."""
    sigs, problems = [], []
    for m in members:
        sig, own = _signature(m)
        sigs.append(sig)
        problems += own
    if problems:
        raise UserError("cannot import: " + "; ".join(problems))
    first, ref = members[0], sigs[0]
    for m, sig in zip(members[1:], sigs[1:]):
        for key in ("input name", "output name"):
            if sig[key] != ref[key]:
                problems.append(f"{m.label}: {key} '{sig[key]}', {first.label} has '{ref[key]}'")
        # Axis 0 is the batch: any size or name there is made dynamic below. A symbolic axis agrees
        # with any size (the contract or another member fixes it).
        for key in ("input dims", "output dims"):
            if any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(sig[key][1:], ref[key][1:])):
                problems.append(f"{m.label}: {key} {sig[key]}, {first.label} has {ref[key]}")
    contract = {"input name": spec.input.name, "output name": spec.output.name}
    for key, wanted in contract.items():
        for m, sig in zip(members, sigs):
            if wanted is not None and sig[key] != wanted:
                problems.append(f"{m.label}: {key} '{sig[key]}', the spec says '{wanted}'")
    def known(key: str, axis: int) -> int | str:
        """The axis' size in the first member that fixes it; a name when none does."""
        return next((sig[key][axis] for sig in sigs if isinstance(sig[key][axis], int)), ref[key][axis])

    chw = [known("input dims", k) for k in (1, 2, 3)]
    if spec.input.shape is not None:
        for m, sig in zip(members, sigs):
            fixed = [(d, want) for d, want in zip(sig["input dims"][1:], spec.input.shape) if isinstance(d, int)]
            if any(d != want for d, want in fixed):
                problems.append(f"{m.label}: input dims {sig['input dims']}, the spec says [batch, "
                                f"{', '.join(map(str, spec.input.shape))}]")
        chw = list(spec.input.shape)
    elif not all(isinstance(d, int) for d in chw):
        problems.append(f"{first.label}: input dims {ref['input dims']} are not all fixed; pass --input CxHxW")
    classes = known("output dims", 1)
    classes = classes if isinstance(classes, int) else None
    if classes is not None and spec.output.classes is not None and classes != spec.output.classes:
        problems.append(f"{first.label}: {classes} classes, the spec says {spec.output.classes}")
    if problems:
        raise UserError("members disagree: " + "; ".join(problems))
    return ref["input name"], ref["output name"], tuple(chw), classes


def _fix_axes(member: Member, chw: tuple[int, int, int], classes: int | None) -> None:
    """Name the batch axis 'batch' and fix C, H, W (and classes, when known): the service checks
    fixed C, H, W and runs batches of any size."""
    inputs, outputs = _graph_io(member)
    for value_info, wanted in ((inputs[0], ("batch", *chw)), (outputs[0], ("batch", classes))):
        for dim, want in zip(value_info.type.tensor_type.shape.dim, wanted):
            if want is None:
                continue
            if isinstance(want, str):
                if dim.HasField("dim_value") or not dim.dim_param:
                    dim.ClearField("dim_value")
                    dim.dim_param = want
                    member.changed = True
            elif not dim.HasField("dim_value"):
                dim.dim_value = want
                member.changed = True


def _session(path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
        raise UserError(f"{path.name}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None


def _check_batch_axis(session: ort.InferenceSession, label: str, chw: tuple[int, int, int]) -> int:
    """Run BATCH_PROBE noise images at once and one by one; returns the class count."""
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((BATCH_PROBE, *chw), dtype=np.float32)
    try:
        together = session.run(None, {name: x})[0]
        alone = np.concatenate([session.run(None, {name: x[k:k + 1]})[0] for k in range(BATCH_PROBE)])
    except Exception as exc:  # onnxruntime's runtime failures
        raise UserError(f"{label}: does not run on a batch of {BATCH_PROBE} images [{BATCH_PROBE}, "
                        f"{', '.join(map(str, chw))}] ({str(exc).splitlines()[0]}); its batch axis must be dynamic") from None
    if together.ndim != 2 or together.shape[0] != BATCH_PROBE or not np.allclose(together, alone, rtol=1e-4, atol=1e-5):
        raise UserError(f"{label}: a batch of {BATCH_PROBE} images gives output {list(together.shape)} that differs "
                        "from one image at a time; its batch axis must be dynamic")
    return int(together.shape[1])


def _initializer_elements(model: onnx.ModelProto) -> int:
    """A member's parameter count as an ONNX file can tell it: every float initializer element
    (the file does not say which were trained)."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return sum(math.prod(i.dims) for i in model.graph.initializer if i.data_type in floats)


def _ort_member(session: ort.InferenceSession) -> Callable[[torch.Tensor], torch.Tensor]:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().numpy().astype(np.float32)})[0])


# ---------------------------------------------------------------------------------------------
# The package


def _check_out(out: Path) -> None:
    """Only a package folder (or nothing) at `out` is ever replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a package folder; refusing to overwrite it")
    if not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise UserError(f"--out {out} is a non-empty folder without manifest.json; refusing to overwrite it")


def _input_record(spec: ImportSpec, name: str, chw: tuple[int, int, int]) -> dict:
    c = chw[0]
    inp = spec.input
    return {"name": name, "shape": list(chw), "channels": inp.channels or ("gray" if c == 1 else "rgb"),
            "scale": inp.scale, "mean": list(inp.mean or [0.0] * c), "std": list(inp.std or [1.0] * c),
            "resize": dataclasses.asdict(inp.resize)}


def _pixels_to_input(pixels: torch.Tensor, record: dict) -> torch.Tensor:
    """uint8 [n, C, H, W] -> x = (pixel * scale - mean[c]) / std[c], as the service pre-processes."""
    mean = torch.tensor(record["mean"], dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(record["std"], dtype=torch.float64).view(1, -1, 1, 1)
    return ((pixels.double() * record["scale"] - mean) / std).float()


def _test_set(spec: ImportSpec, data: Dataset | None, chw: tuple[int, int, int]) -> Dataset | None:
    if data is None and spec.data_root is not None:
        data = load_dataset(spec.dataset, spec.data_root)
    if data is not None and tuple(data.test.images.shape[1:]) != tuple(chw):
        raise UserError(f"dataset {data.name}: images {list(data.test.images.shape[1:])}, the members take {list(chw)}")
    return data


def _source_record(spec: ImportSpec, sources: list[Path]) -> dict:
    record: dict = {"format": spec.source_format,
                    "files": [{"file": p.name, "sha256": sha256_file(p)} for p in sources]}
    if spec.module is not None:
        record.update(module=spec.module, moduleKwargs=spec.module_kwargs)
    if spec.torchscript is not None:
        record["torchscript"] = {"file": Path(spec.torchscript).name, "sha256": sha256_file(Path(spec.torchscript))}
    if spec.source_format != "onnx":
        km = spec.key_map
        record.update(stateKey=km.state_key, stripPrefix=list(km.strip_prefix), renamePrefix=list(km.rename_prefix))
    return record


def _torch_members(spec: ImportSpec, tmp: Path) -> tuple[list[Member], list[nn.Module]]:
    """Build, load and export every checkpoint's member into `tmp`, named by its checkpoint."""
    build = _module_factory(spec)
    what = spec.module or spec.torchscript
    modules, members = [], []
    for i, ckpt in enumerate(spec.checkpoints):
        module = load_checkpoint(build(), ckpt, spec.key_map, what)
        path = tmp / f"member-{i}.onnx"
        try:
            export_onnx(module, spec.input.shape, path)
        except Exception as exc:  # torch.onnx raises many kinds for modules it cannot trace
            raise UserError(f"{ckpt}: {what} does not export to ONNX on input [1, "
                            f"{', '.join(map(str, spec.input.shape))}] ({str(exc).splitlines()[0]})") from None
        member = read_onnx(path)
        member.source = Path(ckpt)
        members.append(member)
        modules.append(module)
    return members, modules


def import_package(spec: ImportSpec, out: str | Path, data: Dataset | None = None) -> dict:
    """Write the package to `out` (replacing a package there only once every check passed) and
    return its manifest. `data`, when given, is the test set instead of `spec.dataset` on disk."""
    out = Path(out)
    _check_out(out)
    tmp = staging_folder(out)
    try:
        if spec.onnx:
            sources = [Path(f) for f in spec.onnx]
            members, modules = [read_onnx(p) for p in sources], None
        else:
            sources = [Path(f) for f in spec.checkpoints]
            members, modules = _torch_members(spec, tmp)
        if len({m.source.name for m in members}) < len(members):
            for m in members:
                m.label_by_path = True
        input_name, output_name, chw, classes = _resolve(members, spec)
        # The contract again, now that the files have said what C is.
        problems = _contract_problems(dataclasses.replace(spec, input=dataclasses.replace(spec.input, shape=chw)))
        if problems:
            raise UserError("cannot import: " + "; ".join(problems))
        sessions, entries = [], []
        for i, member in enumerate(members):
            _fix_axes(member, chw, classes)
            path = tmp / f"member-{i}.onnx"
            if member.changed or modules is not None:
                onnx.save(member.model, str(path))
            else:
                shutil.copyfile(member.source, path)  # the very bytes given: same sha256
            session = _session(path)
            found = _check_batch_axis(session, member.label, chw)
            if classes is not None and found != classes:
                raise UserError(f"{member.label}: returns {found} classes, its file says {classes}")
            if i and found != entries[0]["classes"]:
                raise UserError(f"members disagree: {member.label}: {found} classes, {members[0].label} has "
                                f"{entries[0]['classes']}")
            parameters = count_parameters(modules[i]) if modules is not None else _initializer_elements(member.model)
            if parameters < 1:
                raise UserError(f"{member.label}: holds no weights")
            sessions.append(session)
            entries.append({"file": path.name, "sha256": sha256_file(path), "parameters": parameters, "classes": found})
        classes = entries[0]["classes"]
        if spec.output.classes is not None and classes != spec.output.classes:
            raise UserError(f"{members[0].label}: returns {classes} classes, the spec says {spec.output.classes}")
        data = _test_set(spec, data, chw)
        labels = list(spec.labels) if spec.labels is not None else (
            list(data.labels) if data is not None else [f"class-{k}" for k in range(classes)])
        if len(labels) != classes:
            raise UserError(f"labels: {len(labels)} labels for {classes} classes (the members' output)")
        record = _input_record(spec, input_name, chw)
        ort_members = [_ort_member(s) for s in sessions]

        if data is not None:
            pixels = data.test.images[:GOLDEN_IMAGES]
            golden_labels = data.test.labels[:GOLDEN_IMAGES].tolist()
        else:
            pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (GOLDEN_IMAGES, *chw), dtype=np.uint8))
            golden_labels = None
        golden_x = _pixels_to_input(pixels, record)
        write_golden(tmp, pixels.numpy(), golden_x, ort_members, golden_labels)
        parity = None
        if modules is not None:
            noise = torch.randint(0, 256, (16, *chw), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
            probe = torch.cat([golden_x, _pixels_to_input(noise, record)])
            parity = max(check_parity(m, tmp / e["file"], probe, f"{members[i].label}", PARITY_ATOL)
                         for i, (m, e) in enumerate(zip(modules, entries)))

        mapping = input_mapping({"input": record})
        manifest_members = [{k: e[k] for k in ("file", "sha256", "parameters")} for e in entries]
        evaluation = None
        if data is not None:
            pixel_members = [PixelInput(m, *mapping) if mapping is not None else m for m in ort_members]
            test_x, test_y = data.test.images, data.test.labels
            if spec.test_limit is not None:
                test_x, test_y = test_x[:spec.test_limit], test_y[:spec.test_limit]
            evaluation = {"split": "test", **accuracy(pixel_members, test_x, test_y, torch.device("cpu"))}
        opsets = [_opset(m.model) for m in members]
        manifest = {
            "format": "redserve-package",
            "formatVersion": 1,
            "name": spec.name,
            "version": spec.version,
            "kind": "ensemble",
            "description": spec.description or f"{len(members)} members imported from {spec.source_format} files",
            "input": record,
            "output": {"name": output_name, "classes": classes},
            "labels": labels,
            "members": manifest_members,
            "golden": {"file": "golden.json", "sha256": sha256_file(tmp / "golden.json"), "atol": GOLDEN_ATOL},
            "training": {"method": "imported", "source": _source_record(spec, sources),
                         **({"dataset": spec.dataset or data.name} if (spec.dataset or data) else {})},
            **({"evaluation": evaluation} if evaluation is not None else {}),
            "export": {**export_record(min(opsets), torch_exported=modules is not None),
                       **({"parityMaxAbs": parity, "parityAtol": PARITY_ATOL} if modules is not None else {}),
                       "importedBy": "redtrain import", "commit": git_commit()},
        }
        finish_package(tmp, out, manifest)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
