"""The package contract from the Python side, on the corpus the service is tested on too
(test/fixtures/manifests; test/ensemble/manifest-corpus.test.ts): the same verdicts, the same words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redtrain.manifest import describe_value, validate_manifest

CORPUS = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "manifests"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "good").glob("*.json")))
def test_good_manifests_are_valid(name):
    assert validate_manifest(json.loads((CORPUS / "good" / name).read_text())) == []


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "bad").glob("*.json")))
def test_bad_manifests_give_exactly_the_expected_problems(name):
    assert validate_manifest(json.loads((CORPUS / "bad" / name).read_text())) == EXPECTED[name]


def test_every_expectation_has_its_manifest():
    assert sorted(EXPECTED) == sorted(p.name for p in (CORPUS / "bad").glob("*.json"))
    assert len(EXPECTED) >= 10 and len(list((CORPUS / "good").glob("*.json"))) >= 3


@pytest.mark.parametrize("package", ["fmnist-red", "fmnist-baseline", "fmnist-psred"])
def test_shipped_manifests_are_valid(package):
    path = CORPUS.parents[2] / "models" / package / "manifest.json"
    assert validate_manifest(json.loads(path.read_text())) == []



@pytest.mark.parametrize("value, javascript", [
    # What String(value) gives in Node 20, for each layout ECMAScript's Number::toString has; an
    # integer past 2^53 is read by the service as the nearest float64, and written as one.
    (0.9000000000000001, "0.9000000000000001"), (1e-05, "0.00001"), (1e-07, "1e-7"), (-1.5e-300, "-1.5e-300"),
    (5.0, "5"), (1e20, "100000000000000000000"), (1e21, "1e+21"), (123.456, "123.456"), (0.0, "0"),
    (2**53, "9007199254740992"), (2**60, "1152921504606847000"),
])
def test_numbers_in_messages_read_as_the_service_writes_them(value, javascript):
    assert describe_value(value) == javascript
