"""The study file and its grid: what a sweep runs.

A study (YAML, read with ``yaml.safe_load``; the format is in docs/sweep.md) names a
``kind`` and, per axis, one value or a list of values. :func:`load_study` checks it (one
:class:`~commsim.errors.CommsimError` line naming the file and the key) into a
:class:`Study` whose axes hold canonical values (sizes in bytes, algorithm names resolved,
defaults filled in). :func:`expand` makes the grid: the cartesian product of the axes, each
point a :class:`Scenario` whose ``key`` (:func:`scenario_key`) is a hash of its parameters,
stable across runs and machines, so a results file can be resumed.

Nothing here builds a topology or runs a scenario (:mod:`commsim.plan.scenario` does).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

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
                      "simulate_max", "fp8_comm", "tp_comm_overlap", "overlap_param_gather",
                      "overlap_p2p", "flash_attention")
COMPUTE_KEYS = ("forward", "backward", "optimizer")
ALGORITHM_DIMS = ("tp", "cp", "pp", "dp", "ep", "edp")
TOPOLOGY_FIELDS = ("name", "description", "notes", "builder", "params", "nodes", "links",
                   "model", "profile")


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
    """Read and check a study file; errors name the file and the key. Read through
    commsim's guarded YAML reader (:func:`commsim.topology.spec.read_yaml`: non-UTF-8
    bytes, deep nesting, alias bombs and duplicate keys are one line each)."""
    from commsim.topology.spec import read_yaml

    return parse_study(read_yaml(path, "study"), source=str(path),
                       default_name=Path(path).stem)


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
    return ",".join(f"{k}={scalar(v)}" for k, v in d.items())


def scalar(v) -> str:
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
    for k in ("sequence_parallel", "overlap", "tp_comm_overlap", "overlap_param_gather",
              "overlap_p2p", "flash_attention"):
        if k in out and not isinstance(out[k], bool):
            raise CommsimError(f"training.{k}: {out[k]!r} must be true or false")
    if "mfu" in out:
        v = out["mfu"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise CommsimError(f"training.mfu: {v!r} must be a number in (0, 1], e.g. 0.5")
        out["mfu"] = float(v)
    for k in ("strategy", "recompute", "dtype", "fp8_comm"):
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
            study.topology_labels[canon(item)] = Path(item).stem if (
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
            study.topology_labels[canon(item)] = str(item.get("name") or "topology")
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
                f"{k}={scalar(combo[k])}" for k in varying))
            out.append(d)
            study.topology_labels[canon(d)] = label
    return out


def canon(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- the grid ----------------------------------------------------------------------------

def scenario_key(kind: str, params: dict) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of the scenario's parameters
    (keys sorted): the same study text gives the same keys on every run and machine."""
    text = canon({"kind": kind, **{k: v for k, v in params.items() if k != "kind"}})
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
            label = study.topology_labels.get(canon(p["topology"]), "topology")
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
