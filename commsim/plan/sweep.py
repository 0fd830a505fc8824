"""What-if sweeps: a study file, its grid of scenarios, their keys, and one scenario's run.

A study (YAML, read with ``yaml.safe_load``; the format is in docs/sweep.md) names a
``kind`` and, per axis, one value or a list of values::

    name: fat-tree-scaling
    kind: simulate                     # simulate | workload | plan
    topology: {builder: fat_tree, params: {k: [4, 6, 8]}}
    algorithm: [ring, dbt, hierarchical]
    size: [1M, 16M, 256M]

:func:`load_study` checks it (one :class:`~commsim.errors.CommsimError` line naming the
file and the key), :func:`expand` makes the grid: the cartesian product of the axes, each
scenario a :class:`Scenario` whose ``params`` hold every axis's value in a canonical form
(sizes in bytes, algorithm names resolved, defaults filled in) and whose ``key`` is a
hash of them, stable across runs and machines, so a results file can be resumed.
:func:`check_scenarios` finds bad combinations (more ranks than gpus, a layout that does
not fit) before any work. :func:`run_scenario` runs one scenario as the verbs do
(``commsim simulate``, ``commsim simulate --workload``, ``commsim plan``) and returns its
row; it is a plain function of plain data, so process pools and MPI ranks can run it
(:mod:`commsim.plan.pool`). :class:`Results` reads and appends the JSON-lines file.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from commsim.errors import CommsimError, unknown
from commsim.units import parse_size, parse_size_range, parse_time

KINDS = ("simulate", "workload", "plan")
META_KEYS = ("name", "description", "notes", "kind")
# the axes of each kind, in the order rows list them
AXES = {
    "simulate": ("topology", "collective", "algorithm", "size", "nranks", "placement",
                 "what_if", "mode", "routing", "sharing", "chunks", "channels", "group_size",
                 "gamma"),
    "workload": ("topology", "workload", "layout", "nranks", "placement", "what_if",
                 "compute", "algorithms", "mode", "routing", "sharing", "gamma"),
    "plan": ("topology", "model", "gpus", "layout", "training", "what_if", "simulate"),
}
REQUIRED = {"simulate": ("topology",), "workload": ("topology", "workload"),
            "plan": ("topology", "model", "gpus")}
DEFAULTS = {
    "simulate": {"collective": "allreduce", "algorithm": "all", "size": "256M",
                 "nranks": "all", "placement": "linear", "what_if": {}, "mode": "step",
                 "routing": "ecmp", "sharing": "maxmin", "chunks": "auto",
                 "channels": "auto", "group_size": "auto", "gamma": None},
    "workload": {"layout": {}, "nranks": "all", "placement": "linear", "what_if": {},
                 "compute": {}, "algorithms": {}, "mode": "step", "routing": "ecmp",
                 "sharing": "maxmin", "gamma": None},
    "plan": {"layout": {}, "training": {}, "what_if": {}, "simulate": True},
}
CHOICES = {"mode": ("step", "dataflow"), "routing": ("ecmp", "static"),
           "sharing": ("maxmin", "rtt")}
WORKLOAD_LAYOUT_KEYS = ("tp", "cp", "pp", "dp", "ep", "order")
PLAN_LAYOUT_KEYS = ("tp", "pp", "cp", "ep", "dp")
PLAN_TRAINING_KEYS = ("strategy", "interleave", "micro_batch", "global_batch", "seq_len",
                      "recompute", "sequence_parallel", "dtype", "mfu", "overlap", "gpu",
                      "simulate_max")
COMPUTE_KEYS = ("forward", "backward", "optimizer")
ALGORITHM_DIMS = ("tp", "cp", "pp", "dp", "ep", "edp")
TOPOLOGY_FIELDS = ("name", "description", "notes", "builder", "params", "nodes", "links",
                   "model", "profile")
SIMULATE_MAX = 1024   # plan: simulate gpu counts up to this (as commsim plan's default)
# row keys every kind has (null where they mean nothing for the kind)
RESULT_KEYS = ("time_us", "busbw_gbps", "algbw_gbps", "bottleneck", "events", "wall_s")
ROW_META = ("study", "kind", "key")


# -- the study ---------------------------------------------------------------------------

@dataclass
class Study:
    """A parsed study: ``axes`` maps each axis of ``kind`` to its list of canonical values
    (a list of one where the file gives one value or none)."""

    name: str
    kind: str
    axes: dict
    description: str = ""
    source: str = "study"
    topology_labels: dict = field(default_factory=dict)   # canonical json -> label


@dataclass
class Scenario:
    """One point of the grid: ``params`` (the axes' values), its ``key`` and a short
    ``topology_name`` for tables."""

    index: int
    params: dict
    key: str
    topology_name: str

    def task(self) -> tuple:
        """What a worker needs: plain data only (picklable, JSON-able)."""
        return (self.params["kind"], self.params, self.topology_name)


def load_study(path: str) -> Study:
    """Read and check a study file; errors name the file and the key."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CommsimError(f"study: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise CommsimError(f"study: {str(path)!r} is a folder; give a study YAML file") \
            from None
    except OSError as exc:
        raise CommsimError(f"study: cannot read {str(path)!r}: {exc.strerror or exc}") \
            from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CommsimError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_study(data, source=str(path), default_name=p.stem)


def parse_study(data, source: str = "study", default_name: str = "study") -> Study:
    """A :class:`Study` from a parsed mapping; errors are one line starting ``source:``."""
    try:
        return _parse(data, source, default_name)
    except CommsimError as exc:
        raise CommsimError(f"{source}: {exc}") from None


def _parse(data, source: str, default_name: str) -> Study:
    if not isinstance(data, dict):
        raise CommsimError("a study must be a YAML mapping with name, kind and its axes "
                           "(docs/sweep.md)")
    kind = data.get("kind", "simulate")
    if not isinstance(kind, str) or kind not in KINDS:
        raise unknown("kind", kind, KINDS)
    allowed = META_KEYS + AXES[kind]
    for key in data:
        if key not in allowed:
            err = unknown(f"key for a {kind} study", key, allowed)
            other = [k for k in KINDS if k != kind and key in AXES[k]]
            hint = f" ({key!r} belongs to a {' or '.join(other)} study)" if other else ""
            raise CommsimError(f"{err}{hint}")
    for key in REQUIRED[kind]:
        if data.get(key) is None:
            raise CommsimError(f"{key}: missing; a {kind} study needs "
                               f"{', '.join(REQUIRED[kind])}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise CommsimError(f"name: {name!r} must be a non-empty string")
    for key in ("description", "notes"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise CommsimError(f"{key}: must be text or a list of text lines")
    study = Study(name=name.strip(), kind=kind, axes={}, source=source,
                  description=str(data.get("description") or ""))
    raw = dict(DEFAULTS[kind])
    raw.update({k: v for k, v in data.items() if k in AXES[kind] and v is not None})
    for axis in AXES[kind]:
        study.axes[axis] = _axis(study, axis, raw.get(axis))
    return study


def _values(axis: str, value) -> list:
    """An axis's values: a list as it is (not empty), anything else as a list of one."""
    if isinstance(value, list):
        if not value:
            raise CommsimError(f"{axis}: an empty list makes the grid empty; give at least "
                               "one value (or leave the key out for the default)")
        return value
    return [value]


def expand_mapping(value, field: str, known: tuple[str, ...] | None = None,
                   scalars_only: bool = True) -> list[dict]:
    """``{a: [1, 2], b: x}`` -> ``[{a: 1, b: x}, {a: 2, b: x}]``: list values are axes of
    their own. A list of mappings is the concatenation of theirs; ``{}`` and null are one
    empty mapping. Keys are checked against ``known``."""
    if value is None:
        return [{}]
    if isinstance(value, list):
        if not value:
            raise CommsimError(f"{field}: an empty list makes the grid empty; give at least "
                               "one mapping ({} for none)")
        out: list[dict] = []
        for i, item in enumerate(value):
            if isinstance(item, list):
                raise CommsimError(f"{field}[{i}]: a list inside a list; give mappings")
            out.extend(expand_mapping(item, f"{field}[{i}]", known, scalars_only))
        return out
    if not isinstance(value, dict):
        raise CommsimError(f"{field}: {value!r} must be a mapping, e.g. {{key: value}}, or "
                           "a list of them")
    keys, choices = [], []
    for k, v in value.items():
        if not isinstance(k, str):
            raise CommsimError(f"{field}: key {k!r} must be a name")
        if known is not None and k not in known:
            raise unknown(f"{field} key", k, known)
        vs = _values(f"{field}.{k}", v)
        for item in vs:
            if scalars_only and (isinstance(item, (dict, list)) or item is None):
                raise CommsimError(f"{field}.{k}: {item!r} must be a number, text or "
                                   "true/false")
        keys.append(k)
        choices.append(vs)
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _axis(study: Study, axis: str, value) -> list:
    kind = study.kind
    if axis == "topology":
        return _topologies(study, value)
    if axis == "what_if":
        return [_what_if(d) for d in expand_mapping(value, "what_if")]
    if axis == "collective":
        from commsim import collectives

        return [collectives.resolve_collective(_text(v, axis)) for v in _values(axis, value)]
    if axis == "algorithm":
        from commsim import collectives

        out = []
        for v in _values(axis, value):
            text = _text(v, axis)
            if text.lower() != "all":   # checked against each collective at expansion
                known = {a for c in collectives.COLLECTIVES
                         for a in _algorithm_names(c)}
                if not any(_resolves(c, text) for c in collectives.COLLECTIVES):
                    raise unknown("algorithm", text, known)
            out.append(text.lower())
        return out
    if axis == "size":
        out = []
        for v in _values(axis, value):
            if isinstance(v, bool):
                raise CommsimError(f"size: {v!r} is not a size; write e.g. 1M or 1M:256M")
            if isinstance(v, str) and (":" in v or "," in v):
                out.extend(parse_size_range(v, "size"))
            else:
                out.append(parse_size(v, "size"))
        if any(s < 1 for s in out):
            raise CommsimError("size: sizes must be at least 1 byte")
        return out
    if axis in ("nranks", "gpus"):
        out = []
        for v in _values(axis, value):
            if axis == "nranks" and isinstance(v, str) and v.strip().lower() == "all":
                out.append("all")
                continue
            least = 2 if kind == "simulate" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                hint = "a whole number >= 2 or all" if axis == "nranks" else \
                    "a whole number >= 1"
                raise CommsimError(f"{axis}: {v!r} must be {hint}")
            out.append(v)
        return out
    if axis == "placement":
        from commsim.topology.placement import STRATEGIES

        out = []
        for v in _values(axis, value):
            text = _text(v, axis).strip().lower()
            name, _, arg = text.partition(":")
            if name not in STRATEGIES:
                raise unknown("placement", name, STRATEGIES)
            if arg and (name != "random" or not arg.isdigit()):
                raise CommsimError(f"placement: {v!r}: only random takes a seed, a whole "
                                   "number (random:7)")
            out.append(text)
        return out
    if axis in CHOICES:
        out = []
        for v in _values(axis, value):
            text = _text(v, axis).strip().lower()
            if text not in CHOICES[axis]:
                raise unknown(axis, text, CHOICES[axis])
            out.append(text)
        return out
    if axis in ("chunks", "channels", "group_size"):
        words = {"chunks": ("auto",), "channels": ("auto",), "group_size": ("auto", "switch")}
        out = []
        for v in _values(axis, value):
            if isinstance(v, str) and v.strip().lower() in words[axis]:
                out.append(v.strip().lower())
            elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CommsimError(f"{axis}: {v!r} must be a whole number >= 1 or "
                                   f"{' or '.join(words[axis])}")
            else:
                out.append(v)
        return out
    if axis == "gamma":
        out = []
        for v in _values(axis, value):
            if v is None:
                out.append(None)
            else:
                out.append(parse_time(v, "gamma", require_unit=True, units=("ns", "us")))
        return out
    if axis == "workload":
        return [_text(v, axis) for v in _values(axis, value)]
    if axis == "layout":
        known = WORKLOAD_LAYOUT_KEYS if kind == "workload" else PLAN_LAYOUT_KEYS
        out = []
        for d in expand_mapping(value, "layout", known):
            for k, v in d.items():
                if k != "order" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    raise CommsimError(f"layout.{k}: {v!r} must be a whole number >= 1")
                if k == "order" and not isinstance(v, str):
                    raise CommsimError(f"layout.order: {v!r} must be text like "
                                       "tp-cp-ep-dp-pp")
            out.append(d)
        return out
    if axis == "compute":
        out = []
        for d in expand_mapping(value, "compute", COMPUTE_KEYS):
            out.append({k: parse_time(v, f"compute.{k}", require_unit=True)
                        for k, v in d.items()})
        return out
    if axis == "algorithms":
        out = []
        for d in expand_mapping(value, "algorithms"):
            _check_workload_algorithms(d)
            out.append({k: str(v) for k, v in d.items()})
        return out
    if axis == "model":
        from commsim.plan import models

        return [models.get(_text(v, axis)).name for v in _values(axis, value)]
    if axis == "training":
        return [_training(d) for d in expand_mapping(value, "training", PLAN_TRAINING_KEYS)]
    if axis == "simulate":
        out = []
        for v in _values(axis, value):
            if not isinstance(v, bool):
                raise CommsimError(f"simulate: {v!r} must be true or false")
            out.append(v)
        return out
    raise AssertionError(axis)   # pragma: no cover


def _text(v, field: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise CommsimError(f"{field}: {v!r} must be text")
    return str(v)


def _algorithm_names(collective: str) -> list[str]:
    from commsim import collectives

    return [a.name for a in collectives.algorithms(collective)]


def _resolves(collective: str, name: str) -> bool:
    from commsim import collectives

    try:
        collectives.resolve(collective, name)
    except CommsimError:
        return False
    return True


def _what_if(d: dict) -> dict:
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise CommsimError(f"what_if.{k}: {v!r} is not a finite number")
    return {k: v for k, v in d.items()}


def what_if_label(d: dict) -> str:
    """``{}`` -> ``baseline``; ``{nic_bw: 2x}`` -> ``nic_bw=2x``."""
    if not d:
        return "baseline"
    return ",".join(f"{k}={_scalar(v)}" for k, v in d.items())


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _training(d: dict) -> dict:
    out = dict(d)
    for k in ("interleave", "micro_batch", "global_batch", "seq_len", "simulate_max"):
        if k in out:
            v = out[k]
            least = 0 if k == "simulate_max" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise CommsimError(f"training.{k}: {v!r} must be a whole number >= {least}")
    for k in ("sequence_parallel", "overlap"):
        if k in out and not isinstance(out[k], bool):
            raise CommsimError(f"training.{k}: {out[k]!r} must be true or false")
    if "mfu" in out:
        v = out["mfu"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise CommsimError(f"training.mfu: {v!r} must be a number in (0, 1], e.g. 0.5")
        out["mfu"] = float(v)
    for k in ("strategy", "recompute", "dtype"):
        if k in out:
            out[k] = _text(out[k], f"training.{k}").strip().lower()
    if "gpu" in out:
        from commsim.plan import gpus

        out["gpu"] = gpus.get(_text(out["gpu"], "training.gpu")).name
    return out


def _check_workload_algorithms(d: dict) -> None:
    from commsim.workload import DEFAULT_ALGORITHMS
    from commsim.workload.simulate import algorithm_for
    from commsim.workload.step import Op

    for key, name in d.items():
        dim, _, coll = key.rpartition(":")
        if coll not in DEFAULT_ALGORITHMS:
            raise unknown("algorithms collective", coll, DEFAULT_ALGORITHMS)
        if dim and dim not in ALGORITHM_DIMS:
            raise unknown("algorithms dimension", dim, ALGORITHM_DIMS)
        algorithm_for(Op(dim or "dp", coll, 1, 1, "forward", "", 2), {key: str(name)})


def _topologies(study: Study, value) -> list:
    """Preset names, paths and inline topology mappings (``{builder, params}``), with the
    lists inside ``params`` expanded; labels for tables are kept on the study."""
    out = []
    for i, item in enumerate(_values("topology", value)):
        where = f"topology[{i}]" if isinstance(value, list) else "topology"
        if isinstance(item, str):
            if not item.strip():
                raise CommsimError(f"{where}: give a preset name or a YAML path")
            out.append(item)
            study.topology_labels[_canon(item)] = Path(item).stem if (
                "/" in item or item.endswith((".yaml", ".yml"))) else item
            continue
        if not isinstance(item, dict):
            raise CommsimError(f"{where}: {item!r} must be a preset name, a YAML path or a "
                               "mapping like {builder: fat_tree, params: {k: 8}}")
        for k in item:
            if k not in TOPOLOGY_FIELDS:
                raise unknown(f"{where} key", k, TOPOLOGY_FIELDS)
        if "builder" not in item:
            if any(isinstance(v, list) for v in (item.get("params") or {}).values()):
                raise CommsimError(f"{where}: params without builder")
            out.append(item)
            study.topology_labels[_canon(item)] = str(item.get("name") or "topology")
            continue
        from commsim.topology.builders import BUILDERS

        builder = item["builder"]
        if not isinstance(builder, str) or builder not in BUILDERS:
            raise unknown("topology builder", builder, BUILDERS)
        from commsim.topology.spec import builder_params

        params = item.get("params") or {}
        expanded = expand_mapping(params, f"{where}.params", tuple(builder_params(builder)))
        varying = [k for k, v in params.items() if isinstance(v, list) and len(v) > 1]
        for combo in expanded:
            d = {k: v for k, v in item.items() if k != "params"}
            d["params"] = combo
            base = str(item.get("name") or builder)
            label = base + ("" if not varying else " " + ",".join(
                f"{k}={_scalar(combo[k])}" for k in varying))
            out.append(d)
            study.topology_labels[_canon(d)] = label
    return out


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- the grid ----------------------------------------------------------------------------

def scenario_key(kind: str, params: dict) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of the scenario's parameters
    (keys sorted): the same study text gives the same keys on every run and machine."""
    text = _canon({"kind": kind, **{k: v for k, v in params.items() if k != "kind"}})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expand(study: Study) -> list[Scenario]:
    """Every scenario of the grid, in the study's order (the first axis slowest), each
    once (duplicate combinations are dropped)."""
    axes = AXES[study.kind]
    values = [study.axes[a] for a in axes]
    out: list[Scenario] = []
    seen: set[str] = set()
    for combo in itertools.product(*values):
        params = dict(zip(axes, combo))
        if study.kind == "simulate":
            names = _algorithms_of(params["collective"], params["algorithm"], study.source)
        else:
            names = [None]
        for name in names:
            p = {"kind": study.kind, **params}
            if name is not None:
                p["algorithm"] = name
            p = copy.deepcopy(p)
            key = scenario_key(study.kind, p)
            if key in seen:
                continue
            seen.add(key)
            label = study.topology_labels.get(_canon(p["topology"]), "topology")
            out.append(Scenario(len(out), p, key, label))
    if not out:
        raise CommsimError(f"{study.source}: the grid is empty")
    return out


def _algorithms_of(collective: str, text: str, source: str) -> list[str]:
    from commsim import collectives

    if text == "all":
        return _algorithm_names(collective)
    try:
        return [collectives.resolve(collective, text).name]
    except CommsimError as exc:
        raise CommsimError(f"{source}: algorithm: {exc}") from None


# -- checking scenarios before any work --------------------------------------------------

_GRAPHS: dict = {}
_FABRICS: dict = {}
_WORKLOADS: dict = {}
_ROUTERS: dict = {}
_MODELS: dict = {}
_CACHE_MOST = 64


def _remember(cache: dict, key, value):
    if len(cache) >= _CACHE_MOST:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def topology_data(topology_value, name: str) -> dict:
    """A topology file's mapping (a preset's or a path's file, or the inline mapping),
    named ``name``."""
    from commsim.plan.fabric import Fabric

    if isinstance(topology_value, str):
        data = copy.deepcopy(Fabric.load(topology_value).data)
        data.setdefault("name", name)
    else:
        data = copy.deepcopy(topology_value)
        data["name"] = name
    return data


def apply_what_if(data: dict, changes: dict, skip: tuple[str, ...] = ()) -> dict:
    """``data`` with builder parameters replaced: ``2x`` scales the current value (the
    file's, else the builder's default: a bandwidth, a time, a number), ``1:2`` is a
    ratio for ``oversubscription``, anything else replaces the value as the builder reads
    it (``800Gb/s``, ``500ns``, ``4``). Keys in ``skip`` are left to the caller (a plan's
    layout keys). Setting ``oversubscription`` drops ``spine_bw`` and the other way round
    (builders take one of them); a dgx_cluster's ``gpus_per_node`` keeps the gpu count."""
    changes = {k: v for k, v in changes.items() if k not in skip}
    if not changes:
        return data
    from commsim.topology.builders import BUILDERS
    from commsim.topology.spec import builder_params

    builder = data.get("builder")
    name = data.get("name", "topology")
    if not builder:
        raise CommsimError(f"what_if: topology {name!r} is explicit links (no builder), "
                           "so it has no parameters to change")
    known = builder_params(builder)
    data = copy.deepcopy(data)
    params = data.setdefault("params", {})
    defaults = inspect.signature(BUILDERS[builder]).parameters
    for key, value in changes.items():
        if key not in known:
            err = unknown("what_if key", key, list(skip) + known)
            raise CommsimError(f"{err}; topology {name!r} (builder {builder}) has no "
                               f"parameter {key!r}")
        base = params.get(key, defaults[key].default)
        old = base
        params[key] = _changed(key, base, value)
        if key == "oversubscription":
            params.pop("spine_bw", None)
        if key == "spine_bw":
            params.pop("oversubscription", None)
        if key == "gpus_per_node" and builder == "dgx_cluster" and old:
            nodes = int(params.get("nodes", defaults["nodes"].default))
            params["nodes"] = max(1, math.ceil(nodes * int(old) / int(params[key])))
    return data


def _changed(key: str, base, value):
    from commsim.units import parse_bandwidth

    text = str(value).strip()
    if isinstance(value, str) and text.lower().endswith("x"):
        try:
            factor = float(text[:-1])
        except ValueError:
            raise CommsimError(f"what_if {key}={value}: write a factor like 2x, or a "
                               "value") from None
        if base is None or isinstance(base, bool):
            raise CommsimError(f"what_if {key}={value}: {key} has no value to scale "
                               f"({base!r}); give a value instead")
        if isinstance(base, (int, float)):
            scaled = base * factor
            return int(scaled) if isinstance(base, int) and float(scaled).is_integer() \
                else scaled
        for parse in (lambda t: parse_bandwidth(t, key, require_unit=True),
                      lambda t: parse_time(t, key, require_unit=True),
                      lambda t: float(t.split(":")[0]) / float(t.split(":")[1])):
            try:
                return parse(str(base)) * factor
            except (CommsimError, ValueError, IndexError, ZeroDivisionError):
                continue
        raise CommsimError(f"what_if {key}={value}: cannot scale {base!r}; give a value")
    if key == "oversubscription" and isinstance(value, str) and ":" in text:
        a, _, b = text.partition(":")
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            raise CommsimError(f"what_if {key}={value}: write a ratio like 2:1") from None
    return value


def fabric_for(topology_value, what_if: dict, name: str, skip: tuple[str, ...] = ()):
    """A :class:`~commsim.plan.fabric.Fabric` of a scenario's topology and what-if."""
    from commsim.plan.fabric import Fabric

    key = _canon([topology_value, what_if, skip])
    if key in _FABRICS:
        return _FABRICS[key]
    data = apply_what_if(topology_data(topology_value, name), what_if, skip)
    fab = Fabric(data, data.get("name") or name)
    return _remember(_FABRICS, key, fab)


def graph_for(topology_value, what_if: dict, name: str):
    """The topology graph of a scenario, with its what-if applied (cached per process)."""
    key = _canon([topology_value, what_if])
    if key in _GRAPHS:
        return _GRAPHS[key]
    if not what_if and isinstance(topology_value, str):
        from commsim import topology

        G = topology.load(topology_value)
    else:
        from commsim.topology.spec import parse

        data = apply_what_if(topology_data(topology_value, name), what_if)
        label = name if not what_if else f"{name} {what_if_label(what_if)}"
        G = parse(data, source=f"topology {label!r}", default_name=name)
    return _remember(_GRAPHS, key, G)


def _workload(source: str):
    if source not in _WORKLOADS:
        from commsim.workload import read_workload

        _remember(_WORKLOADS, source, read_workload(source))
    return _WORKLOADS[source]


def check_scenarios(scenarios: list[Scenario], progress=None) -> None:
    """Refuse, before any work, scenarios that cannot run: an unknown topology or what-if
    key, more ranks than gpus, a hierarchical group that does not divide the ranks, a
    layout that does not fit the gpus or the model. Errors name the scenario."""
    for sc in scenarios:
        try:
            _check(sc)
        except CommsimError as exc:
            raise CommsimError(f"scenario {describe(sc)}: {exc}") from None
        if progress:
            progress()


def _check(sc: Scenario) -> None:
    p = sc.params
    kind = p["kind"]
    if kind == "plan":
        _plan_setup(p, sc.topology_name)
        return
    G = graph_for(p["topology"], p["what_if"], sc.topology_name)
    from commsim import topology

    ngpus = len(topology.gpus(G))
    if kind == "simulate":
        n = _ranks(p["nranks"], ngpus, sc.topology_name)
        placed = _placement(G, n, p["placement"])
        if p["algorithm"] == "hierarchical":
            _group(G, n, p["group_size"], placed)
        return
    _workload_setup(p, G, ngpus)


def _ranks(nranks, ngpus: int, name: str) -> int:
    if nranks == "all":
        if ngpus < 2:
            raise CommsimError(f"topology {name!r} has {ngpus} gpu(s); 1 rank has nothing "
                               "to communicate")
        return ngpus
    if nranks > ngpus:
        raise CommsimError(f"nranks: {nranks} ranks need {nranks} gpus; topology {name!r} "
                           f"has {ngpus}")
    return nranks


def _placement(G, n: int, how: str) -> list:
    from commsim.topology.placement import place

    return place(G, n, how)


def _group(G, n: int, setting, placed: list) -> int | None:
    """The hierarchical group size: a number, ``switch`` (the leading ranks that share
    rank 0's switch) or ``auto`` (None: the topology's gpus a node, as commsim simulate)."""
    if setting == "auto":
        return None
    if setting == "switch":
        def attached(gpu):
            return {v for v in G.successors(gpu) if G.nodes[v].get("kind") != "gpu"}

        first = attached(placed[0])
        g = 1
        while g < n and attached(placed[g]) & first:
            g += 1
    else:
        g = int(setting)
    if n % g:
        raise CommsimError(f"group_size: {setting} ({g} ranks a group) does not divide "
                           f"{n} ranks")
    return g


def _workload_setup(p: dict, G, ngpus: int):
    from commsim.workload import resolve_layout

    spec = _workload(p["workload"])
    world = ngpus if p["nranks"] == "all" else p["nranks"]
    if world > ngpus:
        raise CommsimError(f"nranks: {world} ranks need {world} gpus; the topology has "
                           f"{ngpus}")
    given = dict(spec.layout)
    if p["layout"].keys() & {"tp", "cp", "pp"} and "dp" not in p["layout"]:
        given.pop("dp", None)   # the study changes the degrees: dp fills what remains
    layout = resolve_layout(given, world, **p["layout"])
    if p["nranks"] != "all" and layout.world != world:
        raise CommsimError(f"layout: {layout.describe()} is {layout.world} ranks, not "
                           f"nranks {world}; drop dp (it fills what remains) or change "
                           "nranks")
    if layout.world > ngpus:
        raise CommsimError(f"layout: {layout.world} ranks need {layout.world} gpus; the "
                           f"topology has {ngpus}")
    from commsim.workload import place_layout

    placement = place_layout(G, layout, p["placement"])
    return spec, layout, placement


def _plan_setup(p: dict, name: str):
    """``(cfg, fabric, layout, simulate)`` of a plan scenario, checked."""
    from commsim.plan import gpus as gpu_mod
    from commsim.plan import models, planner

    changes = {k: _scalar(v) for k, v in p["what_if"].items()}
    fab = fabric_for(p["topology"], p["what_if"], name, planner.LAYOUT_KEYS)
    _ = fab.link_params if fab.analytic else fab.graph    # a bad value: one line, now
    training = dict(p["training"])
    simulate_max = training.pop("simulate_max", SIMULATE_MAX)
    gpu_name = training.pop("gpu", None)
    gpu = gpu_mod.get(gpu_name) if gpu_name else gpu_mod.default_for(fab.name)
    cfg = planner.Config(model=models.get(p["model"]), gpu=gpu, **training, **p["layout"])
    cfg = planner.apply_config(cfg, changes)
    n = p["gpus"]
    fab_n = fab if n <= fab.ngpus else fab.grow(n)
    if cfg.fixed_layout:
        layout = planner.make_layout(cfg, n)
        why = planner.check_layout(cfg, layout, fab_n.gpus_per_node)
        if why:
            raise CommsimError(f"layout at {n} gpus: {why}")
    else:
        layout = None
    sim = bool(p["simulate"]) and not fab_n.grown and n <= simulate_max
    return cfg, fab_n, layout, sim


def describe(sc: Scenario, axes: list[str] | None = None) -> str:
    """A scenario in a few words: its topology, then each axis not at its default
    (``fat-tree-k8, ring, 16M, nranks 64, nic_bw=2x``); only ``axes`` when given."""
    p = sc.params
    parts = [sc.topology_name] if axes is None or "topology" in axes else []
    bare = ("collective", "algorithm", "size", "workload", "model", "what_if")
    for axis in AXES[p["kind"]][1:]:
        v = p.get(axis)
        if axes is not None and axis not in axes:
            continue
        if axis == "what_if" and not v:
            if axes is not None:
                parts.append("baseline")
            continue
        if axes is None and v == DEFAULTS[p["kind"]].get(axis) and axis != "algorithm":
            continue
        text = format_value(axis, v)
        parts.append(text if axis in bare else f"{axis} {text}")
    return ", ".join(parts)


def format_value(axis: str, v) -> str:
    """An axis value as tables show it."""
    from commsim.units import format_size, format_time

    if axis == "size":
        return format_size(v)
    if axis == "what_if":
        return what_if_label(v)
    if axis == "gamma":
        return "default" if v is None else f"{format_time(v)}/B"
    if axis == "compute":
        return ",".join(f"{k}={format_time(t)}" for k, t in v.items()) or "none"
    if isinstance(v, dict):
        return ",".join(f"{k}={_scalar(x)}" for k, x in v.items()) or "default"
    return _scalar(v)


# -- running one scenario ----------------------------------------------------------------

def run_scenario(task: tuple) -> dict:
    """Run one scenario (``Scenario.task()``) and return its results (without the
    parameters; :func:`make_row` joins them). A plain function of plain data, for
    process pools and MPI workers; caches topologies and routes per process."""
    kind, params, name = task
    wall0 = time.perf_counter()
    if kind == "simulate":
        out = _run_simulate(params, name)
    elif kind == "workload":
        out = _run_workload(params, name)
    else:
        out = _run_plan(params, name)
    out["wall_s"] = time.perf_counter() - wall0
    return plain(out)


def _run_simulate(p: dict, name: str) -> dict:
    from commsim import collectives, model, topology
    from commsim.model.setup import build_options, topology_model, topology_params
    from commsim.sim import simulate

    G = graph_for(p["topology"], p["what_if"], name)
    ngpus = len(topology.gpus(G))
    n = _ranks(p["nranks"], ngpus, name)
    coll, algo, size, mode = p["collective"], p["algorithm"], p["size"], p["mode"]
    placed = _placement(G, n, p["placement"])
    group = _group(G, n, p["group_size"], placed) if algo == "hierarchical" else None
    gamma = p["gamma"] if p["gamma"] is not None else \
        float(topology.model_parameter(G, "gamma", 0.0))
    a, b, opts = topology_params(G, n, algo, group, p["channels"],
                                 linear=p["placement"] == "linear")
    k = model.nchunks_for(p["chunks"], coll, algo, n, size, a, b, gamma, mode=mode, **opts)
    s = collectives.build(coll, algo, n, k, **build_options(opts))
    route_key = _canon([p["topology"], p["what_if"], n, p["placement"], p["routing"], coll,
                        algo, sorted(build_options(opts).items())])
    res = simulate(s, G, size, placement=placed, routing=p["routing"], sharing=p["sharing"],
                   mode=mode, gamma=gamma,
                   overhead=float(topology.model_parameter(G, "step_overhead", 0.0)),
                   message_overhead=opts.get("message_overhead", 0.0),
                   router=_ROUTERS.get(route_key))
    _remember(_ROUTERS, route_key, res.router)
    if route_key not in _MODELS:
        _remember(_MODELS, route_key, topology_model(G, n, res.router))
    est = _MODELS[route_key](coll, algo, n, s.nchunks, opts, size, gamma, mode, s)
    if est is not None:
        t_model, estimate = est.time, est.shared
    else:
        t_model = model.predict(coll, algo, n, size, a, b, gamma, nchunks=s.nchunks,
                                mode=mode, **opts)
        estimate = True
    bott = res.bottleneck
    return dict(ranks=n, nchunks=s.nchunks,
                group=(s.options or {}).get("group_size") if algo == "hierarchical" else None,
                time_us=res.time * 1e6, algbw_gbps=res.algbw / 1e9,
                busbw_gbps=res.busbw / 1e9, t_model_us=t_model * 1e6,
                model_estimate=bool(estimate),
                bottleneck=bott["link"] if bott else None,
                bottleneck_class=bott.get("link_class") if bott else None,
                bottleneck_share=bott.get("share") if bott else None,
                bottleneck_util=bott["utilization"] if bott else None,
                transfers=res.ntransfers, events=res.events)


def _run_workload(p: dict, name: str) -> dict:
    from commsim import topology
    from commsim.sim import simulate_many
    from commsim.workload import run_step, step_timeline

    G = graph_for(p["topology"], p["what_if"], name)
    ngpus = len(topology.gpus(G))
    spec, layout, placement = _workload_setup(p, G, ngpus)
    timeline = step_timeline(spec.shape, layout, dict(p["compute"]))
    gamma = p["gamma"] if p["gamma"] is not None else \
        float(topology.model_parameter(G, "gamma", 0.0))
    step = run_step(timeline, G, layout, placement, dict(p["algorithms"]), simulate_many,
                    routing=p["routing"], mode=p["mode"], gamma=gamma, sharing=p["sharing"],
                    overhead=float(topology.model_parameter(G, "step_overhead", 0.0)),
                    message_overhead=float(topology.model_parameter(G, "message_overhead",
                                                                    0.0)))
    once = step.phases_once()
    many = next((ph.many for ph in once if ph.many is not None), None)
    top = step.slowest_links(1)
    link = cls = share = None
    if top:
        link = many.link_name(top[0]["link"]) if many is not None else str(top[0]["link"])
        cls = many.link_class(top[0]["link"]) if many is not None else None
        share = top[0]["share"]
    dims = {d: {"time_us": v["time_s"] * 1e6, "share": v["share"], "bytes": v["bytes"],
                "busbw_gbps": v["busbw"] / 1e9} for d, v in step.dims.items()}
    return dict(workload_name=spec.name,
                world=layout.world, tp=layout.tp, cp=layout.cp, pp=layout.pp, dp=layout.dp,
                ep=layout.ep, time_us=step.time_s * 1e6, compute_us=step.compute_s * 1e6,
                comm_us=step.comm_s * 1e6,
                comm_exposed_us=max(0.0, step.time_s - step.compute_s) * 1e6,
                busbw_gbps=None, algbw_gbps=None, bottleneck=link, bottleneck_class=cls,
                bottleneck_share=share, dims=dims, phases=len(once),
                events=sum(int(getattr(ph.many, "events", 0) or 0) for ph in once
                           if ph.many is not None))


def _run_plan(p: dict, name: str) -> dict:
    from commsim.plan import planner
    from commsim.workload import Layout

    cfg, fab, layout, sim = _plan_setup(p, name)
    n = p["gpus"]
    if layout is None:
        best, _valid = planner.search(cfg, fab, n, top=1)
        if not best:
            raise CommsimError(f"gpus {n}: no valid layout of {n} gpus for "
                               f"{cfg.model.name}; give the layout")
        b = best[0]
        layout = Layout(tp=b.tp, cp=b.cp, pp=b.pp, dp=b.dp, ep=b.ep)
    simulate_many = None
    if sim:
        from commsim.sim import simulate_many
    row = planner.evaluate(cfg, fab, n, layout, scenario=what_if_label(p["what_if"]),
                           simulate_many=simulate_many, G=fab.graph if sim else None)
    d = row.as_dict()
    for k in ("link_utilization", "scenario", "wall_s", "gpus"):
        d.pop(k, None)
    out = dict(model_name=cfg.model.name, gpu_name=cfg.gpu.name,
               time_us=row.step_time_s * 1e6, busbw_gbps=None, algbw_gbps=None, events=None)
    out.update(d)
    return out


def plain(value):
    """``value`` with numpy scalars and tuples made JSON's own types (recursively)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def make_row(study: Study, sc: Scenario, results: dict) -> dict:
    """A results-file row: the study, kind and key, the parameters, then the results."""
    row = {"study": study.name, "kind": study.kind, "key": sc.key}
    row.update({k: v for k, v in sc.params.items() if k != "kind"})
    row["topology_name"] = sc.topology_name
    row.update({k: v for k, v in results.items() if k not in row})
    for k in RESULT_KEYS:
        row.setdefault(k, None)
    return row


def row_line(row: dict, sc: Scenario | None = None) -> str:
    """One JSON line (``allow_nan=False``: inf and nan are refused with the scenario)."""
    try:
        return json.dumps(row, allow_nan=False) + "\n"
    except ValueError:
        where = describe(sc) if sc is not None else row.get("key")
        raise CommsimError(f"scenario {where}: a result is infinite or undefined, which "
                           "JSON cannot carry; check its links and options") from None


# -- the results file --------------------------------------------------------------------

class Results:
    """A sweep's JSON-lines file: the rows already there (by key), and appending new ones
    one line at a time, flushed, so an interrupted sweep keeps what it finished."""

    def __init__(self, path: str, study: Study) -> None:
        self.path = path
        self.study = study
        self.rows: dict[str, dict] = {}
        self.dropped_tail = False
        self._fh = None

    def read(self) -> dict[str, dict]:
        """The rows of the file keyed by scenario key; refuses a file of another study.
        A last line cut short (a sweep killed while writing it: no newline, not JSON, but
        the start of one of this study's rows) is dropped from the file."""
        p = Path(self.path)
        if not p.exists():
            return self.rows
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CommsimError(f"--out: cannot read {self.path!r}: {exc.strerror or exc}") \
                from None
        lines = data.splitlines(keepends=True)
        keep = len(data)
        ours = json.dumps({"study": self.study.name})[:-1].encode()
        offset = 0
        for i, raw in enumerate(lines):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError
            except ValueError:
                if i == len(lines) - 1 and not raw.endswith(b"\n") and raw.startswith(ours):
                    self.dropped_tail = True   # cut short while being written
                    keep = start
                    break
                raise CommsimError(f"--out: {self.path!r} line {i + 1} is not a sweep row "
                                   "(JSON); give another --out, or repair the file") from None
            study, kind = row.get("study"), row.get("kind")
            if study != self.study.name or kind != self.study.kind or "key" not in row:
                what = (f"rows of study {study!r} ({kind})" if study is not None else
                        "rows that are not sweep results")
                raise CommsimError(
                    f"--out: {self.path!r} holds {what}, not of study {self.study.name!r} "
                    f"({self.study.kind}); give another --out, or delete the file to start "
                    "over")
            self.rows.setdefault(row["key"], row)
        if self.dropped_tail or (data and not data.endswith(b"\n")):
            self._repair(data[:keep])
        return self.rows

    def _repair(self, keep: bytes) -> None:
        if keep and not keep.endswith(b"\n"):
            keep += b"\n"
        try:
            with open(self.path, "wb") as fh:
                fh.write(keep)
        except OSError as exc:
            raise CommsimError(f"--out: cannot rewrite {self.path!r}: "
                               f"{exc.strerror or exc}") from None

    def open(self) -> None:
        """Open the file for appending and lock it (POSIX ``flock``): a second sweep on
        the same file is refused instead of interleaving its lines with this one's.
        Rows another sweep finished since :meth:`read` are read again."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise CommsimError(f"--out: cannot write {self.path!r}: {exc.strerror or exc}") \
                from None
        try:
            import fcntl
        except ImportError:   # not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.close()
                raise CommsimError(f"--out: another commsim sweep is writing {self.path!r}; "
                                   "wait for it to finish or give another --out") from None
        self.read()

    def append(self, line: str, row: dict) -> None:
        self._fh.write(line)
        self._fh.flush()
        self.rows.setdefault(row["key"], row)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
