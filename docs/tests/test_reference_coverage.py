"""The reference covers every public name, and the check notices when one is missing.

Run by ``nox -s docs`` after the build (it reads ``docs/_build/html/objects.inv``); not part
of ``nox -s tests``, which installs no Sphinx.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reference_coverage as rc

INVENTORY = rc.DEFAULT_INVENTORY

pytestmark = pytest.mark.skipif(not INVENTORY.exists(), reason="build the site first (nox -s docs)")


def test_every_public_name_is_in_the_reference():
    assert rc.missing(INVENTORY) == []


def test_the_public_names_include_the_facade_and_the_submodules():
    names = {name for name, _ in rc.public_names()}
    assert {"amcl_lab.nt_xent", "amcl_lab.losses.nt_xent", "amcl_lab.fast.nt_xent"} <= names
    assert "amcl_lab.experiments.run_experiment" in names
    assert "amcl_lab.sharpness.hvp" in names


def test_a_function_missing_from_the_reference_is_reported(tmp_path):
    entries = rc.read_inventory(INVENTORY)
    entries["py:function"].remove("amcl_lab.losses.contrastive.nt_xent")
    doctored = tmp_path / "objects.inv"
    rc.write_inventory(doctored, entries)
    # every place that exports the reference nt_xent; the fast path's is another object
    assert rc.missing(doctored) == [
        "amcl_lab.losses.contrastive.nt_xent",
        "amcl_lab.losses.nt_xent",
        "amcl_lab.nt_xent",
    ]
    assert rc.main([str(doctored)]) == 1


def test_a_class_a_constant_and_a_module_missing_are_reported(tmp_path):
    entries = rc.read_inventory(INVENTORY)
    entries["py:class"].remove("amcl_lab.optim.SAM")
    entries["py:data"].remove("amcl_lab.fast.BLOCK_ELEMENTS")
    entries["py:module"].remove("amcl_lab.distributed")
    doctored = tmp_path / "objects.inv"
    rc.write_inventory(doctored, entries)
    absent = rc.missing(doctored)
    assert {"amcl_lab.SAM", "amcl_lab.optim.SAM", "amcl_lab.distributed"} <= set(absent)
    assert "amcl_lab.fast.BLOCK_ELEMENTS" in absent


def test_the_round_trip_of_an_untouched_inventory_reports_nothing(tmp_path):
    copy = tmp_path / "objects.inv"
    rc.write_inventory(copy, rc.read_inventory(INVENTORY))
    assert rc.missing(copy) == []
