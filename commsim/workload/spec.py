"""Workload files: a parallel layout and a model shape in YAML.

::

    name: gpt3-175b-tp8-pp8
    layout: {tp: 8, pp: 8, dp: 4}              # cp, ep (default 1), order (tp-cp-ep-dp-pp)
    model: {layers: 96, hidden: 12288, seq_len: 2048, micro_batch: 1, micro_batches: 16,
            vocab: 51200, dtype: bf16}
    training: {strategy: zero1, sequence_parallel: true, bucket: 25M, overlap_dp: true}

Sizes (``bucket``) take commsim's binary suffixes (``25M`` = 25 MiB); counts (``params``,
``vocab``) take decimal ones (``175B`` = 175e9, ``50K`` = 50e3). ``dtype`` is ``fp32``,
``bf16``, ``fp16`` or ``fp8`` (or ``dtype_bytes``). Files are read with
``yaml.safe_load``. Shipped workloads live in the repository's ``workloads/`` (and in
``$COMMSIM_WORKLOAD_PATH``), loadable by name like topology presets.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from commsim.errors import CommsimError, unknown
from commsim.units import parse_size
from commsim.workload.layout import Layout, parse_order
from commsim.workload.step import MAX_PARAMS, Shape

TOP_KEYS = ("name", "description", "notes", "layout", "model", "training")
LAYOUT_KEYS = ("tp", "cp", "pp", "dp", "ep", "order")
MODEL_KEYS = ("layers", "hidden", "seq_len", "micro_batch", "micro_batches", "vocab",
              "params", "experts", "top_k", "moe_every", "heads", "kv_heads", "dtype",
              "dtype_bytes")
TRAINING_KEYS = ("strategy", "sequence_parallel", "bucket", "overlap_dp")
DTYPES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2,
          "fp8": 1}
_COUNT = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed workload file: ``layout`` holds only the keys the file gives (the CLI
    fills ``dp`` from the topology when it is absent)."""

    name: str
    description: str
    layout: dict
    shape: Shape


# -- finding files -------------------------------------------------------------------------

def workload_dirs() -> list[Path]:
    """Where workload names are looked up: ``$COMMSIM_WORKLOAD_PATH`` (os.pathsep-separated)
    first, then the shipped ``workloads/`` (package data ``commsim/workloads`` when
    installed from a wheel, else the repository's folder)."""
    dirs = [Path(p) for p in os.environ.get("COMMSIM_WORKLOAD_PATH", "").split(os.pathsep) if p]
    from importlib.resources import files
    packaged = files("commsim") / "workloads"
    if isinstance(packaged, Path) and packaged.is_dir():
        dirs.append(packaged)
    else:
        import commsim
        dirs.append(Path(commsim.__file__).resolve().parent.parent / "workloads")
    return dirs


def workload_names() -> list[str]:
    """The names of the workloads found in :func:`workload_dirs` (sorted)."""
    names = set()
    for d in workload_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml"))
    return sorted(names)


def find_workload(name: str) -> Path | None:
    """The file of workload ``name`` in the first directory that has it, else None."""
    from commsim.topology.spec import is_file

    for d in workload_dirs():
        for suffix in (".yaml", ".yml"):
            if is_file(d / f"{name}{suffix}"):
                return d / f"{name}{suffix}"
    return None


def _read(source) -> tuple[dict, str, str]:
    """``(data, where, default name)`` from a mapping, a path or a shipped name."""
    if isinstance(source, dict):
        return source, "workload", "workload"
    from commsim.topology.spec import read_named_yaml

    data, path = read_named_yaml(source, "workload", find_workload, workload_names)
    return data, str(path), path.stem


# -- parsing -------------------------------------------------------------------------------

def read_workload(source) -> WorkloadSpec:
    """A :class:`WorkloadSpec` from a mapping, a YAML path or a shipped name; errors are one
    line naming the file and the key."""
    data, where, default_name = _read(source)
    try:
        return _parse(data, default_name)
    except CommsimError as exc:
        raise CommsimError(f"{where}: {exc}") from None


def _section(data: dict, key: str, known: tuple) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CommsimError(f"{key}: must be a mapping of {', '.join(known)}")
    for k in value:
        if k not in known:
            raise unknown(f"{key} key", k, known)
    return value


def _parse(data, default_name: str) -> WorkloadSpec:
    if not isinstance(data, dict):
        raise CommsimError("must be a YAML mapping with layout, model and training")
    for k in data:
        if k not in TOP_KEYS:
            raise unknown("key", k, TOP_KEYS)
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise CommsimError(f"name: {data['name']!r} must be a string")
    for key in ("description", "notes"):
        value = data.get(key)
        if value is not None and not isinstance(value, str) and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise CommsimError(f"{key}: must be text or a list of text lines")
    layout = dict(_section(data, "layout", LAYOUT_KEYS))
    model = dict(_section(data, "model", MODEL_KEYS))
    training = dict(_section(data, "training", TRAINING_KEYS))
    for key in ("layers", "hidden", "seq_len"):
        if key not in model:
            raise CommsimError(f"model.{key}: missing; give the model's {key}")
    if "dtype" in model and "dtype_bytes" in model:
        raise CommsimError("model.dtype and model.dtype_bytes exclude each other; give one")
    if "dtype" in model:
        name = str(model.pop("dtype")).lower()
        if name not in DTYPES:
            raise unknown("model.dtype", name, DTYPES)
        model["dtype_bytes"] = DTYPES[name]
    for key in ("params", "vocab"):
        if key in model:
            model[key] = parse_count(model[key], f"model.{key}")
    if "bucket" in training:
        training["bucket"] = parse_size(training["bucket"], "training.bucket")
    if "strategy" in training:
        training["strategy"] = str(training["strategy"]).lower()
    shape = Shape(**model, **training)
    for k in ("tp", "cp", "pp", "ep"):
        _degree(layout, k)
    if "order" in layout:
        parse_order(layout["order"])
    if layout.get("dp") is not None:
        Layout(**layout)
    return WorkloadSpec(name=str(data.get("name") or default_name),
                        description=" ".join(_lines(data.get("description"))),
                        layout=layout, shape=shape)


def _lines(value) -> list[str]:
    return [] if not value else [value] if isinstance(value, str) else list(value)


def parse_count(value, field: str) -> int:
    """A count from ``175000000``, ``175B``, ``1.3B``, ``50K`` (decimal suffixes)."""
    if isinstance(value, bool):
        raise CommsimError(f"{field}: {value!r} is not a count; write e.g. 175B or 50257")
    if isinstance(value, int):
        return value
    m = _COUNT_RE.match(str(value))
    if not m:
        raise CommsimError(f"{field}: {value!r} is not a count; write e.g. 175B, 1.3B or 50257")
    number = float(m.group(1)) * _COUNT[m.group(2).upper()]
    if not number <= MAX_PARAMS:    # also inf, from 1e999
        raise CommsimError(f"{field}: {value!r} is more than {MAX_PARAMS:.0e}, beyond any "
                           "model; check the number")
    if number != int(number):
        raise CommsimError(f"{field}: {value!r} is not a whole number")
    return int(number)


def load_workload(source, gpus: int | None = None, **overrides) -> tuple[Layout, Shape]:
    """``(Layout, Shape)`` from a workload mapping, file or name.

    ``overrides`` (``tp=``, ``cp=``, ``pp=``, ``dp=``, ``ep=``, ``order=``; None = not
    given) replace the file's layout. ``dp`` defaults to what remains of ``gpus``
    (``gpus // (tp cp pp)``) when neither gives it, else to 1.
    """
    spec = read_workload(source)
    return resolve_layout(spec.layout, gpus, **overrides), spec.shape


def resolve_layout(given: dict, gpus: int | None = None, **overrides) -> Layout:
    """A :class:`Layout` from the keys a file gives, ``overrides`` on top, and ``dp`` from
    the ``gpus`` left when neither gives it."""
    for k in overrides:
        if k not in LAYOUT_KEYS:
            raise unknown("layout key", k, LAYOUT_KEYS)
    keys = dict(given)
    keys.update({k: v for k, v in overrides.items() if v is not None})
    if keys.get("dp") is None:
        keys.pop("dp", None)
        if gpus is not None:
            rest = 1
            for k in ("tp", "cp", "pp"):
                rest *= _degree(keys, k)
            if gpus < rest:
                raise CommsimError(f"layout: tp x cp x pp = {rest} ranks need {rest} gpus; "
                                   f"the topology has {gpus}; lower tp, cp or pp")
            keys["dp"] = gpus // rest
    return Layout(**keys)


def _degree(keys: dict, k: str) -> int:
    value = keys.get(k, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommsimError(f"layout.{k}: {value!r} must be a whole number >= 1")
    return value
