"""The model package contract (docs/model-format.md), checked in Python.

The format itself is docs/model-format.schema.json, shared with the service; this module reads it
with `jsonschema`, words each violation as '<field>: expected <the schema's description>, got
<value>' exactly as src/ensemble/manifest.ts does, and adds what a schema cannot say: relations
between fields here, file presence and sha256 in `check_package`. Both sides are tested on one
corpus of good and bad manifests (test/fixtures/manifests).
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from redtrain.errors import UserError

# How far sampling.probabilities may sum from 1 (docs/model-format.md); the service normalises by the sum.
PROBABILITY_SUM_TOLERANCE = 1e-6

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "model-format.schema.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_json_number(_checker, v: object) -> bool:
    """A number as the service reads it: a finite float64 (1e400, or an integer of 400 digits, reads
    as Infinity there and fails 'number', as NaN does)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return math.isfinite(v) if isinstance(v, float) else abs(v) < 2**1024


_Validator = validators.extend(Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many({
    "number": _is_json_number,
    "integer": lambda checker, v: _is_json_number(checker, v) and (isinstance(v, int) or v.is_integer()),
}))


@cache
def _validator() -> Draft202012Validator:
    if not SCHEMA_PATH.is_file():
        raise UserError(f"the package format {SCHEMA_PATH} is missing: redtrain runs from a checkout of the repository "
                        "(pip install -e training)")
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return _Validator(schema)


def field_path(parts) -> str:
    """['members', 1, 'sha256'] -> 'members[1].sha256'; the root is 'manifest'."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "manifest"


def _child(path: str, key: str) -> str:
    return key if path == "manifest" else f"{path}.{key}"


def js_number(x: float) -> str:
    """`x` as JavaScript's String(x) writes it: the shortest digits that read back as `x` (what
    repr finds too), laid out by ECMAScript's Number::toString rules (0.00001, not 1e-05; 1e+21,
    not 1e21; 5, not 5.0), so messages that show a number read the same in both validators."""
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number(-x)
    t = Decimal(repr(x)).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    k, n = len(digits), t.exponent + len(digits)  # x = 0.<digits> * 10^n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    return f"{digits[0]}{'.' + digits[1:] if k > 1 else ''}e{'+' if e >= 0 else '-'}{abs(e)}"


def describe_value(v: object) -> str:
    """A short rendering of a JSON value, the same in both languages."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        text = json.dumps(v, ensure_ascii=False)
        return text if len(text) <= 42 else text[:40] + '..."'
    if isinstance(v, int):
        # JavaScript reads every JSON number as a float64: past 2^53 it no longer holds every integer.
        if abs(v) <= 2**53:
            return str(v)
        return js_number(float(v)) if abs(v) < 2**1024 else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, float):
        return js_number(v)
    if isinstance(v, list):
        return f"a list of {len(v)}"
    return "an object"


def _problems_of(error: ValidationError) -> list[str]:
    path = field_path(error.absolute_path)
    if error.validator == "required":
        return [f"{_child(path, key)}: missing" for key in error.validator_value if key not in error.instance]
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        return [f"{_child(path, key)}: unknown key" for key in error.instance if key not in known]
    description = error.schema.get("description", f"a value that satisfies '{error.validator}'")
    if error.validator == "not":
        return [f"{path}: {description}"]
    return [f"{path}: expected {description}, got {describe_value(error.instance)}"]


def _relations(m: dict) -> list[str]:
    """What the schema cannot say: fields that must agree with each other. Each check runs only
    where the fields it reads already have the schema's shape."""
    problems = []
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    inp = m.get("input")
    if isinstance(inp, dict):
        shape, channels = inp.get("shape"), inp.get("channels")
        c = shape[0] if isinstance(shape, list) and len(shape) == 3 and is_int(shape[0]) else None
        if c is not None and channels in ("gray", "rgb") and c != (1 if channels == "gray" else 3):
            problems.append(f"input.shape: C={c} does not match channels '{channels}'")
        for key in ("mean", "std"):
            v = inp.get(key)
            if c is not None and isinstance(v, list) and len(v) != c:
                problems.append(f"input.{key}: {len(v)} values for C={c}")
    out, labels = m.get("output"), m.get("labels")
    classes = out.get("classes") if isinstance(out, dict) else None
    if is_int(classes) and isinstance(labels, list) and len(labels) != classes:
        problems.append(f"labels: {len(labels)} labels for {classes} classes")
    members = m.get("members")
    if m.get("kind") == "ps-red" and isinstance(members, list):
        for i, member in enumerate(members):
            if isinstance(member, dict) and is_int(member.get("index")) and member["index"] != i:
                problems.append(f"members[{i}].index: {member['index']}, expected {i} (its position)")
    target = m.get("target")
    tensors = target.get("tensors") if m.get("kind") == "ps-red" and isinstance(target, dict) else None
    if isinstance(tensors, list):
        offset = 0
        for i, t in enumerate(tensors):
            if not (isinstance(t, dict) and isinstance(t.get("shape"), list) and all(is_int(d) for d in t["shape"])
                    and is_int(t.get("offset")) and is_int(t.get("length"))):
                break
            expected = 4 * math.prod(t["shape"])
            if t["length"] != expected:
                problems.append(f"target.tensors[{i}].length: {t['length']}, expected 4 * prod(shape) = {expected}")
            if t["offset"] != offset:
                problems.append(f"target.tensors[{i}].offset: {t['offset']}, expected {offset} (contiguous)")
            offset = t["offset"] + t["length"]
    sampling = m.get("sampling")
    probabilities = sampling.get("probabilities") if isinstance(sampling, dict) else None
    if isinstance(probabilities, list) and probabilities:
        if isinstance(members, list) and members and len(probabilities) != len(members):
            problems.append(f"sampling.probabilities: {len(probabilities)} values for {len(members)} members")
        if all(_is_json_number(None, p) for p in probabilities):
            # Left to right in float64, as the service sums (not sum(), which compensates from 3.12 on).
            total = 0.0
            for p in probabilities:
                total += p
            if not abs(total - 1) <= PROBABILITY_SUM_TOLERANCE:
                problems.append(f"sampling.probabilities: sum {describe_value(total)}, expected 1 (within 1e-6)")
    training = m.get("training")
    source = training.get("source") if isinstance(training, dict) and training.get("method") == "imported" else None
    files = source.get("files") if isinstance(source, dict) else None
    if isinstance(files, list) and files and isinstance(members, list) and members and len(files) != len(members):
        problems.append(f"training.source.files: {len(files)} files for {len(members)} members")
    evaluation = m.get("evaluation")
    accuracies = evaluation.get("memberAccuracy") if isinstance(evaluation, dict) else None
    if isinstance(accuracies, list) and isinstance(members, list) and members and len(accuracies) != len(members):
        problems.append(f"evaluation.memberAccuracy: {len(accuracies)} values for {len(members)} members")
    return problems


def validate_manifest(m: object) -> list[str]:
    """Every way `m` departs from the format, each naming its field; an empty list means valid."""
    problems = [p for error in _validator().iter_errors(m) for p in _problems_of(error)]
    if isinstance(m, dict):
        problems += _relations(m)
    return sorted(set(problems))


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
        else:
            files += [(key, manifest[key]["file"], manifest[key]["sha256"]) for key in ("hypernet", "target")]
        files.append(("golden", manifest["golden"]["file"], manifest["golden"]["sha256"]))
    for where, name, sha in files:
        f = package_dir / name
        if not f.is_file():
            problems.append(f"{where}: file {name} not found in the package")
        elif sha256_file(f) != sha:
            problems.append(f"{where}: sha256 of {name} does not match the manifest")
    if problems:
        raise UserError(f"invalid package {package_dir}: " + "; ".join(problems))
    return manifest
