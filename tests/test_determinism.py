"""The same inputs give byte-identical simulator output, run after run.

Each run is a fresh process with its own hash seed, so set and dict orders and object
addresses differ: a result that depended on them (a sum over a set of flows, say)
would show here. ECMP choices are hashes of the transfer's ids, never random.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "contended collectives": ["simulate", "--topology", "leaf-spine-2to1", "--placement",
                              "random:3", "--algorithm", "ring,rhd", "--size", "4M",
                              "--mode", "dataflow"],
    "a training step": ["simulate", "--topology", "dgx-a100-4node", "--workload",
                        "tp8-dp32", "--dp", "4", "--pp", "1", "--placement", "random:1"],
}


def _run(argv: list[str], out: Path, seed: str) -> bytes:
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "commsim", *argv, "--json", str(out)], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=300)
    return out.read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_runs_write_identical_json(case, tmp_path):
    argv = CASES[case]
    first = _run(argv, tmp_path / "a.jsonl", "1")
    second = _run(argv, tmp_path / "b.jsonl", "2")
    assert first and first == second
