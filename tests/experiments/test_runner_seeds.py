"""``--seeds auto`` and ``--workers``: the sequential plan in a real run, seeds in processes.

Runs use the ``simclr_digits`` smoke preset (seconds per seed).  With several workers the
numbers must equal those of one process, ``metrics.jsonl`` must hold every evaluation
exactly once, and a resumed run (one training's checkpoint lost) must end where the
uninterrupted one did.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from amcl_lab.cli import main
from amcl_lab.experiments import Results, run_experiment
from amcl_lab.experiments._parallel import LOCK_NAME, share
from amcl_lab.experiments._protocol import VERDICTS

NAME = "simclr_digits"


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _numbers(results: Results) -> list[tuple]:
    return [(c["id"], c["per_seed"], c["mean"], c["verdict"]) for c in results.claims]


def test_seeds_auto_runs_the_looks_of_the_plan(tmp_path, capsys):
    code = main(["run", NAME, "--preset", "smoke", "--seeds", "auto:6", "--out", str(tmp_path)])
    assert code == 0
    assert "(Holm:" in capsys.readouterr().out
    (run_dir,) = (tmp_path / NAME).iterdir()
    results = Results.load(run_dir)
    plan = results.sequential
    assert plan["looks"] == [3, 6] and plan["alpha_per_look"] == pytest.approx(0.025)
    assert plan["looks_run"] in ([3], [3, 6])
    assert list(results.seeds) == list(range(plan["looks_run"][-1]))
    assert {r["seed"] for r in results.rows} == set(results.seeds)
    for claim in results.claims:
        assert claim["level"] == pytest.approx(0.975)
        assert claim["n_seeds"] == len(results.seeds)
        assert claim["holm_verdict"] in VERDICTS
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["seeds"] == 6  # the cap: what the plan may use


def test_bad_seeds_option_is_a_usage_error(tmp_path, capsys):
    assert main(["run", NAME, "--preset", "smoke", "--seeds", "lots", "--out", str(tmp_path)]) == 2
    assert "expected a number, 'auto' or 'auto:CAP'" in capsys.readouterr().err


def test_share_is_round_robin():
    assert share((0, 1, 2, 3, 4), 2) == [(0, 2, 4), (1, 3)]
    assert share((7,), 3) == [(7,)]


def test_workers_give_the_numbers_of_one_process_and_resume_bit_for_bit(tmp_path):
    kw = {"preset": "smoke", "overrides": ("seeds=4",), "quiet": True}
    run1, one = run_experiment(NAME, out=tmp_path / "a", run_id="r", **kw)
    run2, two = run_experiment(NAME, out=tmp_path / "b", run_id="r", workers=2, **kw)
    assert _numbers(one) == _numbers(two)
    key = lambda r: (r["run"], r["step"])  # noqa: E731
    first, second = _lines(run1.dir), _lines(run2.dir)
    assert Counter(map(key, second)) == Counter(map(key, first))  # nothing lost or doubled
    assert max(Counter(map(key, second)).values()) == 1
    assert sorted(first, key=key) == sorted(second, key=key)  # the same values
    assert (run2.dir / LOCK_NAME).exists()

    # a kill: one training's checkpoint is gone, its lines stay; resume with two workers
    (run2.dir / "checkpoints" / "seed1.pt").unlink()
    (run2.dir / "results.json").unlink()
    _, resumed = run_experiment(NAME, out=tmp_path / "b", run_id="r", resume=True, workers=2, **kw)
    assert _numbers(resumed) == _numbers(one)
    again = _lines(run2.dir)
    assert max(Counter(map(key, again)).values()) == 1
    assert sorted(again, key=key) == sorted(first, key=key)
