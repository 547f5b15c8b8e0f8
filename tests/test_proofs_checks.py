"""Every proof-check script passes in its fast mode (``python proofs_checks/x.py --fast``).

A proof check states a claim, prints the numeric evidence with PASS/FAIL per statement and
exits non-zero on any failure; ``nox -s proofs`` runs the same scripts in full mode.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "proofs_checks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_proof_check_passes_in_fast_mode(script):
    result = subprocess.run(
        [sys.executable, str(script), "--fast"], capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASS" in result.stdout and "FAIL" not in result.stdout, output
