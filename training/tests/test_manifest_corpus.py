"""The package contract from the Python side, on the corpus the service is tested on too
(test/fixtures/manifests; test/ensemble/manifest-corpus.test.ts): the same verdicts, the same words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redtrain.manifest import validate_manifest

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
