"""What-ifs: ``KEY=VALUE`` changes to a topology's builder parameters or a plan's options.

One reader for every place a what-if is applied: ``commsim plan --what-if`` (through
:meth:`commsim.plan.fabric.Fabric.with_changes` and :func:`apply_config`) and a sweep's
``what_if`` (:func:`commsim.plan.scenario.apply_what_if`). Values come as text from the
command line or as YAML scalars from a study; either way:

- ``2x`` (``0.5x``) scales the current value: the topology file's, else the builder's
  default. Bandwidths and times keep their unit's meaning (``400Gb/s`` x 2 = 100 GB/s),
  ratios (``2:1``) and numbers scale as numbers. A count (``gpus_per_node``, ``spines``,
  ...) must stay whole: ``0.3x`` of 8 gpus is refused, not rounded. A parameter with no
  value (derived, ``None``) or a true/false one cannot be scaled.
- ``a:b`` is a ratio (``oversubscription=2:1`` is 2.0).
- ``true``/``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``, any case, and
  YAML's booleans) for the parameters that are true or false; anything else is refused.
- Bandwidths and times given as text need a unit (``800Gb/s``, ``500ns``; a latency may
  be ``0``): a bare ``800`` would be 800 bytes/s. YAML numbers are taken as the builder
  reads them (bytes/s, seconds).
- A count must be a whole number; other numbers are read as numbers; the rest is passed
  to the builder as text (it reads ``800Gb/s`` itself).
- Setting ``oversubscription`` drops ``spine_bw`` and the other way round (builders take
  one of them); a ``dgx_cluster``'s ``gpus_per_node`` keeps the gpu count (the node count
  follows).

Every error is one line that names the field (``--what-if`` on the command line,
``what_if`` in a study) and the change (``--what-if nic_bw=fast: ...``); an unknown key
gets close matches (:func:`commsim.errors.unknown`).
"""

from __future__ import annotations

import copy
import inspect
import math

from commsim.errors import CommsimError, unknown
from commsim.units import parse_bandwidth, parse_time

FIELD = "--what-if"
# builder parameters that count things: a what-if keeps them whole
COUNT_KEYS = frozenset({"n", "k", "nodes", "leaves", "spines", "hosts", "hosts_per_leaf",
                        "gpus_per_node", "nodes_per_leaf", "groups", "routers_per_group",
                        "hosts_per_router"})
RATIO_KEYS = frozenset({"oversubscription"})
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _err(field: str, key: str, value, why: str) -> CommsimError:
    return CommsimError(f"{field} {key}={_show(value)}: {why}")


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(key: str, base) -> str:
    """How a parameter's value is read: bandwidth, time, ratio, count, bool or other."""
    if key.endswith("_bw") or key == "bandwidth":
        return "bandwidth"
    if key.endswith("_latency") or key == "latency":
        return "time"
    if key in RATIO_KEYS:
        return "ratio"
    if key in COUNT_KEYS:
        return "count"
    if isinstance(base, bool):
        return "bool"
    return "other"


def read_bool(key: str, value, field: str = FIELD) -> bool:
    """``true``/``false`` (``yes``/``no``, ``on``/``off``, ``1``/``0``, any case) or a
    YAML boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _err(field, key, value, f"{key} is true or false")


def read_whole(key: str, value, field: str = FIELD, least: int = 1) -> int:
    """A whole number >= ``least`` (``4``, ``4.0``; not ``4.5``, ``four`` or true)."""
    if isinstance(value, bool):
        raise _err(field, key, value, f"{key} must be a whole number >= {least}")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise _err(field, key, value, f"{key} must be a whole number >= {least}") from None
    if not number.is_integer() or number < least:
        raise _err(field, key, value, f"{key} must be a whole number >= {least}")
    return int(number)


def read_number(key: str, value, field: str = FIELD) -> float:
    if isinstance(value, bool):
        raise _err(field, key, value, f"{key} must be a number")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise _err(field, key, value, f"{key} must be a number") from None
    if not math.isfinite(number):
        raise _err(field, key, value, f"{key} must be a finite number")
    return number


def _ratio(key: str, value, field: str) -> float:
    a, _, b = str(value).strip().partition(":")
    try:
        out = float(a) / float(b)
    except (ValueError, ZeroDivisionError):
        raise _err(field, key, value, "write a ratio like 2:1") from None
    if not out > 0:
        raise _err(field, key, value, "write a ratio like 2:1")
    return out


def _scale(key: str, base, factor: float, text, field: str):
    """``base`` (the current value) times ``factor``."""
    kind = _kind(key, base)
    if base is None:
        raise _err(field, key, text, f"{key} has no value to scale (it is derived from "
                   "the other parameters); give a value instead")
    if isinstance(base, bool) or kind == "bool":
        raise _err(field, key, text, f"{key} is true or false; a factor cannot scale it")
    try:
        if kind == "bandwidth":
            return parse_bandwidth(base, key) * factor
        if kind == "time":
            return parse_time(base, key) * factor
        if kind == "ratio" and isinstance(base, str) and ":" in base:
            return _ratio(key, base, field) * factor
        number = float(base) * factor
    except (CommsimError, ValueError, TypeError):
        raise _err(field, key, text, f"{key} is {base!r}, which a factor cannot scale; "
                   "give a value instead") from None
    if kind == "count":
        if not float(number).is_integer() or number < 1:
            raise _err(field, key, text, f"{factor:g} x {base} = {number:g} {key}, not a "
                       "whole number; give a factor that keeps it whole, or a value")
        return int(number)
    if isinstance(base, int) and float(number).is_integer():
        return int(number)
    return number


def topology_value(key: str, base, value, field: str = FIELD):
    """The value a builder parameter takes after the what-if ``key=value`` (``base``:
    its current value, the file's or the builder's default)."""
    kind = _kind(key, base)
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.lower().endswith("x"):
        try:
            factor = float(text[:-1])
        except ValueError:
            raise _err(field, key, value, "write a factor like 2x, or a value") from None
        if not (factor > 0 and math.isfinite(factor)):
            raise _err(field, key, value, "a factor must be positive, like 2x or 0.5x")
        return _scale(key, base, factor, value, field)
    if kind == "bool":
        return read_bool(key, text, field)
    if kind == "count":
        return read_whole(key, text, field)
    if kind == "ratio":
        if isinstance(text, str) and ":" in text:
            return _ratio(key, text, field)
        number = read_number(key, text, field)
        if not number > 0:
            raise _err(field, key, value, f"{key} must be positive, e.g. 2:1 or 2")
        return number
    if kind in ("bandwidth", "time"):
        if isinstance(text, bool):
            raise _err(field, key, value, f"{key} is a {kind}, e.g. "
                       + ("800Gb/s" if kind == "bandwidth" else "500ns"))
        if isinstance(text, (int, float)):
            return text                     # a YAML number: bytes/s or seconds
        try:
            if kind == "bandwidth":
                parse_bandwidth(text, key, require_unit=True)
            else:
                parse_time(text, key, require_unit=True, units=("ns", "us", "ms"))
        except CommsimError as exc:
            raise _err(field, key, value, str(exc).split(": ", 1)[-1]) from None
        return text
    if isinstance(text, str):
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                continue
    return text


def check_key(key: str, builder: str | None, topology: str, extra: tuple[str, ...] = (),
              field: str = FIELD, hidden: tuple[str, ...] = ("nodes", "leaves")) -> None:
    """Refuse a key that is neither one of ``extra`` (a plan's option keys) nor a
    parameter of the topology's builder, with close matches. ``hidden`` parameters are
    refused too (a plan's node count follows its gpu count; a sweep may change it)."""
    from commsim.topology.spec import builder_params

    params = [k for k in builder_params(builder) if k not in hidden] if builder else []
    if key in extra or key in params:
        return
    err = unknown(f"{field} key", key, list(extra) + params)
    where = (f"; topology {topology!r} (builder {builder}) has no parameter {key!r}"
             if builder else f"; topology {topology!r} is explicit links (no builder), so "
             + ("only the plan's own keys apply" if extra else "it has no parameters to "
                "change"))
    raise CommsimError(f"{err}{where}")


def apply_topology(data: dict, changes: dict, field: str = FIELD,
                   skip: tuple[str, ...] = (), name: str | None = None,
                   hidden: tuple[str, ...] = ()) -> dict:
    """A copy of topology mapping ``data`` with the builder parameters in ``changes``
    changed (keys in ``skip`` are left to the caller: a plan's option keys; ``hidden``
    ones are refused, :func:`check_key`). ``name`` names the topology in errors (default:
    the mapping's ``name``)."""
    changes = {k: v for k, v in changes.items() if k not in skip}
    if not changes:
        return data
    from commsim.topology.builders import BUILDERS

    builder = data.get("builder")
    name = name or data.get("name") or "topology"
    for key in changes:
        check_key(key, builder, name, skip, field, hidden)
    defaults = inspect.signature(BUILDERS[builder]).parameters
    data = copy.deepcopy(data)
    params = data.setdefault("params", {})

    def current(key):
        return params[key] if key in params else defaults[key].default

    nodes, gpn = current("nodes") if "nodes" in defaults else None, \
        current("gpus_per_node") if "gpus_per_node" in defaults else None
    for key, value in changes.items():
        params[key] = topology_value(key, current(key), value, field)
        if key == "oversubscription":
            params.pop("spine_bw", None)
        if key == "spine_bw":
            params.pop("oversubscription", None)
    if "gpus_per_node" in changes and builder == "dgx_cluster":
        total = int(nodes) * int(gpn)
        params["nodes"] = max(1, math.ceil(total / int(params["gpus_per_node"])))
    return data


# -- a plan's own keys: layout and training options ------------------------------------

# key -> how its value is read
PLAN_KEYS = {"tp": "whole", "pp": "whole", "cp": "whole", "ep": "whole",
             "interleave": "whole", "micro_batch": "whole", "strategy": "text",
             "mfu": "number", "gpu": "gpu", "recompute": "text", "dtype": "text",
             "fp8_comm": "text", "tp_comm_overlap": "bool", "overlap_param_gather": "bool",
             "overlap_p2p": "bool", "flash_attention": "bool", "overlap": "bool"}


def plan_value(key: str, value, field: str = FIELD):
    """A plan option's value from a what-if (``tp=4``, ``mfu=0.45``,
    ``tp_comm_overlap=true``, ``gpu=h200``)."""
    how = PLAN_KEYS[key]
    if how == "whole":
        return read_whole(key, value, field)
    if how == "bool":
        return read_bool(key, value, field)
    if how == "number":
        number = read_number(key, value, field)
        if key == "mfu" and not 0 < number <= 1:
            raise _err(field, key, value, "mfu must be a number in (0, 1], e.g. 0.5")
        return number
    if how == "gpu":
        from commsim.plan import gpus

        try:
            return gpus.get(str(value))
        except CommsimError as exc:
            raise _err(field, key, value, str(exc)) from None
    return str(value).strip().lower()


def apply_config(cfg, changes: dict, field: str = FIELD):
    """``cfg`` (a :class:`commsim.plan.planner.Config`) with the plan keys of a what-if
    applied; a layout key fixes the other degrees at the baseline's."""
    from dataclasses import replace

    over = {k: plan_value(k, v, field) for k, v in changes.items() if k in PLAN_KEYS}
    if over.keys() & {"tp", "pp", "cp", "ep"}:
        over.setdefault("tp", cfg.tp or 1)
    try:
        return replace(cfg, **over)
    except CommsimError as exc:
        text = ",".join(f"{k}={_show(v)}" for k, v in changes.items() if k in PLAN_KEYS)
        raise CommsimError(f"{field} {text}: {exc}") from None
