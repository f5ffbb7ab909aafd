"""Packages loaded for evaluation as the service serves them (redtrain.package)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from redtrain.errors import UserError
from redtrain.package import check_parity, load_target

FIXTURES = Path(__file__).resolve().parents[2] / "test" / "fixtures"


@pytest.mark.parametrize("package", ["tiny-ensemble", "tiny-psred"])
def test_served_members_rebuild_within_tolerance(package):
    target = load_target(str(FIXTURES / package))
    assert len(target.members) == len(target.manifest["members"])
    assert check_parity(target, torch.rand(8, 1, 28, 28)) <= 1e-4


def test_single_member_spec_and_its_range():
    target = load_target(f"{FIXTURES / 'tiny-ensemble'}:1")
    assert len(target.members) == 1 and target.name.endswith("member 1 alone")
    with pytest.raises(UserError, match=r"member 7 is out of range \[0, 3\)"):
        load_target(f"{FIXTURES / 'tiny-ensemble'}:7")
