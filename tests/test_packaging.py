"""Packaging: a built wheel, installed (not editable) into a fresh virtual environment,
ships the topology presets and runs from there.

The wheel is built offline from a copy of the source (``pip wheel --no-deps
--no-build-isolation --no-index``, with the setuptools of the running interpreter), so the
repository gets no ``build/`` and nothing is downloaded. The fresh environment has no pip
and gets commsim with ``--no-deps``; a ``.pth`` file lends it the runtime dependencies
from where the running interpreter has them. Commands run isolated (``python -I``) from a
directory outside the repository, so the source tree cannot be imported.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DEPS = ("numpy", "networkx", "rich", "yaml")  # pyproject's dependencies, by module
# what the build reads
SOURCE = ("pyproject.toml", "README.md", "commsim", "topologies", "workloads")
OPTIONAL_SOURCE = ("setup.py", "setup.cfg", "MANIFEST.in", "LICENSE")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def _env() -> dict:
    """The caller's environment without anything that could point at the source tree or
    at other presets."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "COMMSIM_TOPOLOGY_PATH")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONNOUSERSITE="1")
    return env


def _run(cmd, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _env(), text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE + OPTIONAL_SOURCE:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=SKIP)
        elif path.is_file() or name in SOURCE:
            shutil.copy2(path, src / name)
    wheelhouse = tmp / "wheelhouse"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "--disable-pip-version-check", "-q", "-w", wheelhouse, src], cwd=tmp)
    (wheel,) = wheelhouse.glob("commsim-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
          "--no-index", "--disable-pip-version-check", "-q", wheel], cwd=tmp)
    purelib = _run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=tmp).stdout.strip()
    dep_dirs = {str(Path(importlib.import_module(m).__file__).resolve().parent.parent)
                for m in RUNTIME_DEPS}
    # appended after the venv's own site-packages: the installed commsim is found first
    (Path(purelib) / "commsim-test-deps.pth").write_text("\n".join(sorted(dep_dirs)) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_ships_presets_and_runs_from_a_fresh_venv(tmp_path):
    pytest.importorskip("setuptools", minversion="64")
    pytest.importorskip("pip", minversion="22.3")  # pip --python
    presets = sorted(p.stem for p in (ROOT / "topologies").glob("*.yaml"))
    assert {"fat-tree-k8", "localhost"} <= set(presets)

    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in presets:
        assert f"commsim/topologies/{name}.yaml" in names, f"{name}.yaml is not in the wheel"
    for path in (ROOT / "workloads").glob("*.yaml"):
        assert f"commsim/workloads/{path.name}" in names, f"{path.name} is not in the wheel"
    for init in (ROOT / "commsim").rglob("__init__.py"):  # no subpackage left out
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} is not in the wheel"

    python = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    where = _run([python, "-I", "-c", "import commsim; print(commsim.__file__)"], cwd=work)
    installed = Path(where.stdout.strip()).resolve()
    assert installed.is_relative_to(python.parent.parent.resolve()), installed
    assert not installed.is_relative_to(ROOT), installed

    listed = _run([python, "-I", "-m", "commsim", "topo", "list"], cwd=work).stdout
    for name in presets:
        assert name in listed, f"{name} missing from `commsim topo list`:\n{listed}"

    _run([python, "-I", "-m", "commsim", "simulate", "--topology", "fat-tree-k8",
          "--collective", "allreduce", "--algorithm", "ring", "--size", "1M"], cwd=work)
    _run([python, "-I", "-m", "commsim", "workload", "show", "--topology", "dgx-h100-32node",
          "--workload", "tp8-dp32"], cwd=work)

    # $COMMSIM_TOPOLOGY_PATH still adds presets beside the shipped ones
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "my-lab.yaml").write_text("builder: ring\nparams: {n: 4}\n")
    env = dict(_env(), COMMSIM_TOPOLOGY_PATH=str(extra))
    listed = _run([python, "-I", "-m", "commsim", "topo", "list"], cwd=work, env=env).stdout
    assert "my-lab" in listed and "fat-tree-k8" in listed, listed
