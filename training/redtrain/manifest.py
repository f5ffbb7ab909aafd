"""The model package contract (docs/model-format.md), checked in Python.

`validate_manifest` returns every problem at once (an empty list means valid); `check_package`
adds the file checks (presence, sha256) and raises one UserError listing them all.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from redtrain.errors import UserError

FORMAT = "redserve-package"
FORMAT_VERSION = 1
TOP_LEVEL = {
    "format", "formatVersion", "name", "version", "kind", "description", "input", "output", "labels",
    "members", "golden", "training", "evaluation", "export", "hypernet", "target",
}
REQUIRED = TOP_LEVEL - {"description", "hypernet", "target"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
FITS = ("fill", "contain", "cover")
KERNELS = ("nearest", "linear", "cubic", "lanczos3")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _plain_file(name: object) -> bool:
    return isinstance(name, str) and name != "" and "/" not in name and "\\" not in name and name not in (".", "..")


def _check_input(inp: object, problems: list[str]) -> None:
    if not isinstance(inp, dict):
        problems.append("input: expected an object")
        return
    if not isinstance(inp.get("name"), str) or not inp.get("name"):
        problems.append("input.name: expected a non-empty string")
    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        problems.append("input.shape: expected [C, H, W] of positive integers")
        shape = None
    channels = inp.get("channels")
    if channels not in ("gray", "rgb"):
        problems.append(f"input.channels: {channels!r} is not 'gray' or 'rgb'")
    elif shape and shape[0] != (1 if channels == "gray" else 3):
        problems.append(f"input.shape: C={shape[0]} does not match channels '{channels}'")
    if not _is_number(inp.get("scale")) or inp.get("scale") <= 0:
        problems.append("input.scale: expected a positive number")
    c = shape[0] if shape else None
    for key in ("mean", "std"):
        v = inp.get(key)
        if not (isinstance(v, list) and all(_is_number(x) for x in v)) or (c is not None and len(v) != c):
            problems.append(f"input.{key}: expected {c if c else 'C'} numbers")
        elif key == "std" and any(x <= 0 for x in v):
            problems.append("input.std: every value must be > 0")
    resize = inp.get("resize")
    if not isinstance(resize, dict):
        problems.append("input.resize: expected an object {fit, kernel, background}")
    else:
        if resize.get("fit") not in FITS:
            problems.append(f"input.resize.fit: {resize.get('fit')!r} is not one of {', '.join(FITS)}")
        if resize.get("kernel") not in KERNELS:
            problems.append(f"input.resize.kernel: {resize.get('kernel')!r} is not one of {', '.join(KERNELS)}")
        bg = resize.get("background")
        if not (_is_number(bg) and 0 <= bg <= 255):
            problems.append("input.resize.background: expected a number in [0, 255]")
    unknown = set(inp) - {"name", "shape", "channels", "scale", "mean", "std", "resize"}
    if unknown:
        problems.append(f"input: unknown keys {', '.join(sorted(unknown))}")


def _check_psred(m: dict, problems: list[str]) -> None:
    """The ps-red entries: members by index, the hypernetwork, and the weightless target with its tensor map."""
    members = m.get("members")
    if isinstance(members, list):
        for i, mem in enumerate(members):
            if not (isinstance(mem, dict) and mem.get("index") == i):
                problems.append(f"members[{i}]: expected {{ index: {i}, parameters }}")
            elif not (isinstance(mem.get("parameters"), int) and mem["parameters"] > 0):
                problems.append(f"members[{i}].parameters: expected a positive integer")
    for key in ("hypernet", "target"):
        entry = m.get(key)
        if not (isinstance(entry, dict) and _plain_file(entry.get("file"))
                and isinstance(entry.get("sha256"), str) and SHA_RE.match(entry["sha256"])):
            problems.append(f"{key}: expected {{ file, sha256 (64 hex), ... }}")
    hypernet = m.get("hypernet")
    if isinstance(hypernet, dict) and not (isinstance(hypernet.get("input"), str) and hypernet["input"]):
        problems.append("hypernet.input: expected the name of the member-index input")
    target = m.get("target")
    if not isinstance(target, dict):
        return
    if not _plain_file(target.get("externalData")):
        problems.append("target.externalData: expected a plain file name")
    tensors = target.get("tensors")
    if not (isinstance(tensors, list) and tensors):
        problems.append("target.tensors: expected a non-empty list of { name, shape, offset, length }")
        return
    offset = 0
    for i, t in enumerate(tensors):
        ok = (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and d > 0 for d in t["shape"])
              and isinstance(t.get("offset"), int) and isinstance(t.get("length"), int))
        if not ok:
            problems.append(f"target.tensors[{i}]: expected {{ name, shape, offset, length }}")
            return
        expected = 4 * math.prod(t["shape"])
        if t["length"] != expected:
            problems.append(f"target.tensors[{i}] ({t['name']}): length {t['length']} != 4 * prod(shape) = {expected}")
        if t["offset"] != offset:
            problems.append(f"target.tensors[{i}] ({t['name']}): offset {t['offset']}, expected {offset} (contiguous)")
        offset = t["offset"] + t["length"]


def validate_manifest(m: object) -> list[str]:
    """Every way `m` departs from docs/model-format.md, as messages naming the key."""
    if not isinstance(m, dict):
        return ["manifest: expected a JSON object"]
    problems: list[str] = []
    for key in sorted(REQUIRED - set(m)):
        problems.append(f"{key}: missing")
    for key in sorted(set(m) - TOP_LEVEL):
        problems.append(f"{key}: unknown key")
    if "format" in m and m["format"] != FORMAT:
        problems.append(f"format: expected '{FORMAT}', got {m['format']!r}")
    if "formatVersion" in m and m["formatVersion"] != FORMAT_VERSION:
        problems.append(f"formatVersion: expected {FORMAT_VERSION}, got {m['formatVersion']!r}")
    if "name" in m and not (isinstance(m["name"], str) and NAME_RE.match(m["name"])):
        problems.append(f"name: {m['name']!r} must match {NAME_RE.pattern}")
    if "version" in m and not (isinstance(m["version"], str) and m["version"]):
        problems.append("version: expected a non-empty string")
    kind = m.get("kind")
    if "kind" in m and kind not in ("ensemble", "ps-red"):
        problems.append(f"kind: {kind!r} is not 'ensemble' or 'ps-red'")
    if "input" in m:
        _check_input(m["input"], problems)
    out = m.get("output")
    classes = None
    if "output" in m:
        if not (isinstance(out, dict) and isinstance(out.get("name"), str)
                and isinstance(out.get("classes"), int) and out["classes"] > 0):
            problems.append("output: expected { name: string, classes: positive integer }")
        else:
            classes = out["classes"]
    labels = m.get("labels")
    if "labels" in m:
        if not (isinstance(labels, list) and all(isinstance(s, str) for s in labels)):
            problems.append("labels: expected a list of strings")
        elif classes is not None and len(labels) != classes:
            problems.append(f"labels: {len(labels)} labels for {classes} classes")
    members = m.get("members")
    if "members" in m:
        if not (isinstance(members, list) and members):
            problems.append("members: expected a non-empty list")
        elif kind == "ensemble":
            for i, mem in enumerate(members):
                if not isinstance(mem, dict):
                    problems.append(f"members[{i}]: expected an object")
                    continue
                if not _plain_file(mem.get("file")):
                    problems.append(f"members[{i}].file: expected a plain file name in the package")
                if not (isinstance(mem.get("sha256"), str) and SHA_RE.match(mem["sha256"])):
                    problems.append(f"members[{i}].sha256: expected 64 lowercase hex digits")
                if not (isinstance(mem.get("parameters"), int) and mem["parameters"] > 0):
                    problems.append(f"members[{i}].parameters: expected a positive integer")
    golden = m.get("golden")
    if "golden" in m:
        if not (isinstance(golden, dict) and _plain_file(golden.get("file"))
                and isinstance(golden.get("sha256"), str) and SHA_RE.match(golden["sha256"])
                and _is_number(golden.get("atol")) and golden["atol"] > 0):
            problems.append("golden: expected { file, sha256 (64 hex), atol > 0 }")
    for key in ("training", "evaluation", "export"):
        if key in m and not isinstance(m[key], dict):
            problems.append(f"{key}: expected an object")
    training = m.get("training")
    if isinstance(training, dict):
        for key in ("method", "seed", "dataset", "commit"):
            if key not in training:
                problems.append(f"training.{key}: missing")
    evaluation = m.get("evaluation")
    if isinstance(evaluation, dict):
        for key in ("randomDrawAccuracy", "ensembleAccuracy"):
            v = evaluation.get(key)
            if not (_is_number(v) and 0 <= v <= 1):
                problems.append(f"evaluation.{key}: expected a number in [0, 1]")
        accs = evaluation.get("memberAccuracy")
        if not (isinstance(accs, list) and all(_is_number(a) and 0 <= a <= 1 for a in accs)):
            problems.append("evaluation.memberAccuracy: expected a list of numbers in [0, 1]")
        elif isinstance(members, list) and len(accs) != len(members):
            problems.append(f"evaluation.memberAccuracy: {len(accs)} values for {len(members)} members")
    if isinstance(evaluation, dict):
        if evaluation.get("split") != "test":
            problems.append(f"evaluation.split: expected 'test', got {evaluation.get('split')!r}")
        n = evaluation.get("examples")
        if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            problems.append("evaluation.examples: expected a positive integer")
    export = m.get("export")
    if isinstance(export, dict):
        if not (isinstance(export.get("opset"), int) and export["opset"] >= 17):
            problems.append("export.opset: expected an integer >= 17")
        for key in ("torch", "onnx", "onnxruntime", "createdAt"):
            if not (isinstance(export.get(key), str) and export[key]):
                problems.append(f"export.{key}: expected a non-empty string")
    if kind == "ps-red":
        _check_psred(m, problems)
    if kind == "ensemble":
        for key in ("hypernet", "target"):
            if key in m:
                problems.append(f"{key}: only allowed in kind 'ps-red' packages")
    return problems


def check_package(package_dir: str | Path) -> dict:
    """Validate manifest.json and every file it names; return the manifest or raise listing all problems."""
    package_dir = Path(package_dir)
    path = package_dir / "manifest.json"
    if not path.is_file():
        raise UserError(f"{package_dir} is not a model package: manifest.json not found")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    problems = validate_manifest(manifest)
    files: list[tuple[str, str, str]] = []
    if not problems:
        if manifest["kind"] == "ensemble":
            files += [(f"members[{i}]", mem["file"], mem["sha256"]) for i, mem in enumerate(manifest["members"])]
        files.append(("golden", manifest["golden"]["file"], manifest["golden"]["sha256"]))
        for key in ("hypernet", "target"):
            if isinstance(manifest.get(key), dict) and "file" in manifest[key]:
                files.append((key, manifest[key]["file"], manifest[key].get("sha256", "")))
    for where, name, sha in files:
        f = package_dir / name
        if not f.is_file():
            problems.append(f"{where}: file {name} not found in the package")
        elif sha256_file(f) != sha:
            problems.append(f"{where}: sha256 of {name} does not match the manifest")
    if problems:
        raise UserError(f"invalid package {package_dir}: " + "; ".join(problems))
    return manifest
