"""``torchrun --nproc_per_node 2 -m amcl_lab run ...`` without torchrun: 2 forked ranks.

torchrun only exports ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` and starts the processes; here each forked rank gets that environment and
calls the command line's ``main``, which creates the gloo group itself
(:func:`amcl_lab.distributed.process_group_from_env`).  The demo experiment's smoke preset
runs once, then a second launch (a new job, as after a kill) with ``--resume`` finds it
finished.  Rank 0 alone writes the run folder and prints.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from amcl_lab import cli

from ddp_launch import launch

pytestmark = pytest.mark.distributed

RUN = ["run", "simclr_digits", "--preset", "smoke", "--seeds", "1", "--run-id", "ddp"]


def _main(rank: int, world_size: int, argv: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(argv)
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list, Path]:
    # what the ranks import anyway (DDP: torch._dynamo; the experiment: pandas, matplotlib),
    # imported once here instead of once per rank and job
    import matplotlib.pyplot  # noqa: F401
    import torch._dynamo  # noqa: F401

    from amcl_lab.experiments import simclr_digits  # noqa: F401

    out = tmp_path_factory.mktemp("runs")
    argv = [*RUN, "--out", str(out), "--device", "cpu", "--quiet"]
    jobs = [launch(_main, args, init="env", timeout=120) for args in (argv, [*argv, "--resume"])]
    return jobs, out / "simclr_digits" / "ddp"


def test_two_process_run_completes_and_resumes(ranks):
    jobs, folder = ranks
    for job in jobs:
        for rank, (code, printed) in enumerate(job):
            assert code == 0
            assert ("run folder:" in printed) == (rank == 0)  # only rank 0 prints
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["batch_size"] % 2 == 0
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [0, 3, 6]  # logged once, by rank 0, and not again on --resume
    assert (folder / "results.json").is_file()
    assert list((folder / "figures").iterdir())
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["seed0.pt"]
