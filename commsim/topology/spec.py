"""YAML topology files <-> ``networkx.DiGraph``.

A file is a mapping with metadata (``name``, ``description``, ``notes``) and either a
builder with its parameters, or explicit nodes and links (or both: the explicit part is
added to what the builder made)::

    name: my-cluster
    description: two DGX-style nodes
    builder: dgx_cluster
    params: {nodes: 2, gpus_per_node: 8, nvlink_bw: 450GB/s, nic_bw: 400Gb/s}

    nodes: [{name: g0, kind: gpu}, {name: sw, kind: switch}]
    links: [{src: g0, dst: sw, bandwidth: 50GB/s, latency: 1us, duplex: true,
             efficiency: 0.9}]

Units are parsed by :mod:`commsim.units`; ``duplex: true`` (the default) makes two
directed edges. A link's ``bandwidth`` is its line rate; its optional ``efficiency`` (in
(0, 1], default 1) makes the graph's ``bandwidth`` line rate x efficiency, as do the
builders' efficiency parameters (:mod:`commsim.topology.efficiency`); ``ideal=True``
ignores both. An optional ``class`` names the kind of link (``nvlink``, ``spine``).
Every problem raises one :class:`CommsimError` line naming the file and the field
(``links[3].dst: unknown node 'g9'; did you mean 'g1'?``).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import networkx as nx
import yaml

from commsim.errors import CommsimError, unknown
from commsim.topology import KINDS, check, preset_dirs, presets
from commsim.topology.builders import BUILDERS
from commsim.topology.efficiency import is_efficiency_param, link, parse_efficiency
from commsim.units import parse_bandwidth, parse_size, parse_time

__all__ = ["builder_params", "dumps", "find_preset", "load", "parse", "read_yaml"]

TOP_FIELDS = ("name", "description", "notes", "builder", "params", "nodes", "links", "model",
              "profile")
MODEL_FIELDS = ("reduce_bandwidth", "step_overhead", "exchange_overhead", "exchange_latency",
                "message_overhead", "native_message_overhead", "contention",
                "first_touch_bandwidth", "cores_per_rank", "cache_bytes", "warm_link_speedup",
                "warm_reduce_bandwidth", "apart_reduce_bandwidth")
MAX_CONTENTION = 1e6    # model.contention: a ring's slowdown over one pair alone
MAX_CORES_PER_RANK = 1e6
MAX_WARM_SPEEDUP = 1e3  # model.warm_link_speedup: a cache's gain over memory
LINK_FIELDS = ("src", "dst", "bandwidth", "latency", "duplex", "efficiency", "class")
_META = ("name", "description", "notes")


def builder_params(builder: str) -> list[str]:
    """The parameters a builder takes in a file's ``params`` (``name`` is top-level)."""
    sig = inspect.signature(BUILDERS[builder])
    return [p for p in sig.parameters if p != "name"]


def find_preset(name: str) -> Path | None:
    """The file of preset ``name`` in the first directory of :func:`preset_dirs` that has it."""
    for d in preset_dirs():
        for suffix in (".yaml", ".yml"):
            path = d / f"{name}{suffix}"
            if is_file(path):
                return path
    return None


def is_file(path) -> bool:
    """``Path(path).is_file()``, False where the name itself is unusable (too long, a NUL
    byte) instead of an OSError or ValueError."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


# -- reading YAML --------------------------------------------------------------------------

MAX_ALIAS_EXPANSION = 1_000_000  # values that aliases may add to a document (a YAML bomb)
MAX_DEPTH = 100     # levels of nesting (the files commsim reads have fewer than ten)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, before building any value, what would be a trap
    for the code that walks the data: aliases that expand to more than
    :data:`MAX_ALIAS_EXPANSION` values (a "billion laughs" document of a few hundred bytes
    that is 10**9 values once printed, copied or turned into JSON), an alias inside the
    value it names (a recursive structure), a key given twice in one mapping (YAML keeps
    the last one silently), and nesting deeper than :data:`MAX_DEPTH` (PyYAML composes
    recursively: thousands of ``[`` are a RecursionError, and the code that walks the
    data recurses too)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise CommsimError(f"line {line}: nested more than {MAX_DEPTH} levels deep; "
                                   "is it the right file?")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        _check_nodes(node)
        return super().construct_document(node)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_keys(node) -> None:
    seen = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in seen:
            raise CommsimError(f"line {key.start_mark.line + 1}: key {key.value!r} is given "
                               "twice in one mapping; keep one")
        seen.add((key.tag, key.value))


def _check_nodes(root) -> None:
    """Refuse a recursive alias, a duplicate key, or aliases expanding past the limit:
    one pass over the node graph (each node once, without recursion), counting every
    node as often as aliases repeat it."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise CommsimError(f"line {node.start_mark.line + 1}: an alias refers to a value "
                               "that holds it (a recursive structure); write the value out")
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_keys(node)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    if size[id(root)] - len(size) > MAX_ALIAS_EXPANSION:
        raise CommsimError(f"aliases expand the document to {size[id(root)]:,} values (a YAML "
                           f"bomb?); commsim reads at most {MAX_ALIAS_EXPANSION:,} more than "
                           "are written out")


def load_yaml(text: str, where: str):
    """``yaml.safe_load(text)`` with the guards of :class:`_Loader` and every failure one
    :class:`CommsimError` line starting ``where:``."""
    try:
        return yaml.load(text, Loader=_Loader)   # a SafeLoader, with the guards above
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CommsimError(f"{where}: not valid YAML{at}: {problem}") from None
    except CommsimError as exc:
        raise CommsimError(f"{where}: {exc}") from None
    except RecursionError:
        raise CommsimError(f"{where}: nested too deeply to read (thousands of levels of "
                           "[ or {); is it the right file?") from None


def read_yaml(path, kind: str):
    """The data of the YAML file at ``path``, read as :func:`load_yaml` does; ``kind``
    (``study``, ``topology``) names it in the errors. A missing file, a folder, a file
    that cannot be read or is not UTF-8 text: one :class:`CommsimError` line each."""
    text = str(path)
    p = Path(text)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CommsimError(f"{kind}: no such file {text!r}") from None
    except IsADirectoryError:
        raise CommsimError(f"{kind}: {text!r} is a folder; give a {kind} YAML file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CommsimError(f"{kind}: cannot read {text!r}: {reason}") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommsimError(f"{text}: not UTF-8 text (byte {exc.start + 1} is "
                           f"{raw[exc.start]:#04x}); save it as UTF-8") from None
    return load_yaml(content, text)


def read_named_yaml(source, kind: str, find, names) -> tuple[object, Path]:
    """``(data, path)`` of a YAML file given by path or by a shipped name: ``find(name)``
    is the named file or None, ``names()`` the names for a close-match suggestion.
    ``kind`` (``topology``, ``workload``) names what was asked for in the errors. Read
    with ``yaml.safe_load``; every failure is one :class:`CommsimError` line."""
    text = str(source)
    looks_like_path = isinstance(source, Path) or "/" in text or "\\" in text \
        or text.endswith((".yaml", ".yml"))
    path = None if looks_like_path or not text.strip() else find(text)
    if path is None:
        candidate = Path(text)
        if not text.strip():
            raise CommsimError(f"{kind}: give a name or the path of a YAML {kind} file")
        if is_file(candidate):
            path = candidate
        elif looks_like_path:
            raise CommsimError(f"{kind}: no such file {text!r}")
        else:
            err = unknown(kind, text, names())
            raise CommsimError(f"{err}; or give the path of a YAML {kind} file")
    return read_yaml(path, kind), path


def load(name_or_path, ideal: bool = False) -> nx.DiGraph:
    """A validated topology from a preset name or a YAML file path; ``ideal=True`` puts
    every link at line rate (efficiencies are checked, then ignored)."""
    data, path = read_named_yaml(name_or_path, "topology", find_preset, presets)
    return parse(data, source=str(path), default_name=path.stem, ideal=ideal)


def parse(data, source: str = "topology", default_name: str | None = None,
          ideal: bool = False) -> nx.DiGraph:
    """A validated DiGraph from a parsed YAML mapping; errors name ``source`` and the field.
    ``ideal=True``: every link at line rate (``G.graph["ideal"]`` is then True)."""
    try:
        return _parse(data, default_name, ideal)
    except CommsimError as exc:
        raise CommsimError(f"{source}: {exc}") from None


def _parse(data, default_name, ideal: bool = False) -> nx.DiGraph:
    if not isinstance(data, dict):
        raise CommsimError("must be a YAML mapping with builder/params or nodes/links")
    for key in data:
        if key not in TOP_FIELDS:
            raise unknown("field", key, TOP_FIELDS)
    if "builder" not in data and "nodes" not in data:
        raise CommsimError("missing field 'builder' (with 'params') or 'nodes' and 'links'")
    name = data.get("name", default_name) or "topology"
    if not isinstance(name, str):
        raise CommsimError(f"name: {name!r} must be a string")
    if "builder" in data:
        G = _from_builder(data["builder"], data.get("params") or {}, name, ideal)
    else:
        if "params" in data:
            raise CommsimError("params: given without 'builder'; add builder: NAME")
        G = nx.DiGraph()
    G.graph["name"] = name
    for key in ("description", "notes"):
        if key in data:
            value = data[key]
            ok = isinstance(value, str) or (isinstance(value, list) and
                                            all(isinstance(v, str) for v in value))
            if not ok:
                raise CommsimError(f"{key}: must be text or a list of text lines")
            G.graph[key] = value
    _add_nodes(G, data.get("nodes") or [])
    _add_links(G, data.get("links") or [], ideal)
    if ideal:
        G.graph["ideal"] = True
    if "model" in data:
        G.graph["model"] = _model(data["model"])
    if "profile" in data:
        if not isinstance(data["profile"], dict):
            raise CommsimError("profile: must be a mapping (what measured this profile)")
        G.graph["profile"] = data["profile"]
    return check(G, where="")


def _model(spec) -> dict:
    """A profile's model parameters in SI units: ``gamma`` (s/byte), ``step_overhead``,
    ``exchange_overhead``, ``exchange_latency``, ``message_overhead`` and
    ``native_message_overhead`` (s), ``gamma_apart`` (s/byte of a reduction written into
    a buffer apart from its operands, ``out = a + b``),
    ``contention`` (a factor >= 1), ``first_touch`` (s/byte of freshly mapped memory
    written for the first time), ``cores_per_rank`` (the cores each rank had: below 2
    its reductions cannot overlap its transfers, below 1 ranks share cores), and for calls
    whose data stays in the cache (:mod:`commsim.topology.warm`) ``cache_bytes``,
    ``warm_link_speedup`` (a factor >= 1) and ``warm_gamma`` (s/byte)."""
    if not isinstance(spec, dict):
        raise CommsimError("model: must be a mapping like {reduce_bandwidth: 5GB/s, "
                           "step_overhead: 20us, message_overhead: 5us, contention: 1.2}")
    for key in spec:
        if key not in MODEL_FIELDS:
            raise CommsimError(f"model: {unknown('field', key, MODEL_FIELDS)}")
    out = {}
    if "reduce_bandwidth" in spec:
        out["gamma"] = 1.0 / parse_bandwidth(spec["reduce_bandwidth"], "model.reduce_bandwidth")
    if "apart_reduce_bandwidth" in spec:
        out["gamma_apart"] = 1.0 / parse_bandwidth(spec["apart_reduce_bandwidth"],
                                                   "model.apart_reduce_bandwidth")
    if "first_touch_bandwidth" in spec:
        out["first_touch"] = 1.0 / parse_bandwidth(spec["first_touch_bandwidth"],
                                                   "model.first_touch_bandwidth")
    for key in ("step_overhead", "exchange_overhead", "exchange_latency", "message_overhead",
                "native_message_overhead"):
        if key in spec:
            out[key] = parse_time(spec[key], f"model.{key}")
    if "contention" in spec:
        value = spec["contention"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 1 <= value <= MAX_CONTENTION:
            raise CommsimError(f"model.contention: {value!r} must be a number from 1 to "
                               f"{MAX_CONTENTION:g}")
        out["contention"] = float(value)
    if "cores_per_rank" in spec:
        value = spec["cores_per_rank"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= MAX_CORES_PER_RANK:
            raise CommsimError(f"model.cores_per_rank: {value!r} must be a number above 0 "
                               f"and at most {MAX_CORES_PER_RANK:g} (a host's usable cores "
                               "over its ranks, e.g. 0.5 for 4 ranks on 2 cores)")
        out["cores_per_rank"] = float(value)
    if "cache_bytes" in spec:
        out["cache_bytes"] = parse_size(spec["cache_bytes"], "model.cache_bytes")
    if "warm_reduce_bandwidth" in spec:
        out["warm_gamma"] = 1.0 / parse_bandwidth(spec["warm_reduce_bandwidth"],
                                                  "model.warm_reduce_bandwidth")
    if "warm_link_speedup" in spec:
        value = spec["warm_link_speedup"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 1 <= value <= MAX_WARM_SPEEDUP:
            raise CommsimError(f"model.warm_link_speedup: {value!r} must be a number from 1 "
                               f"to {MAX_WARM_SPEEDUP:g} (how much faster transfers run "
                               "where their buffers stay in the cache)")
        out["warm_link_speedup"] = float(value)
    return out


def _from_builder(builder, params, name: str, ideal: bool = False) -> nx.DiGraph:
    if not isinstance(builder, str) or builder not in BUILDERS:
        raise unknown("builder", builder, BUILDERS)
    if not isinstance(params, dict):
        raise CommsimError(f"params: must be a mapping of {builder} parameters, "
                           f"e.g. {{{builder_params(builder)[0]}: ...}}")
    known = builder_params(builder)
    for key in params:
        if key not in known:
            err = unknown(f"parameter of builder {builder}", key, known)
            raise CommsimError(f"params.{key}: {err}")
    if ideal:  # line rates: check the efficiencies, then build without them
        for key in [k for k in params if is_efficiency_param(k)]:
            parse_efficiency(params[key], f"params.{key}")
        params = {k: v for k, v in params.items() if not is_efficiency_param(k)}
    try:
        return BUILDERS[builder](**params, name=name)
    except CommsimError as exc:
        raise CommsimError(f"params.{exc}") from None


def _node_name(value, field: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CommsimError(f"{field}: {value!r} must be a string or an integer")
    return value


def _add_nodes(G: nx.DiGraph, nodes) -> None:
    if not isinstance(nodes, list):
        raise CommsimError("nodes: must be a list of {name: ..., kind: ...} mappings")
    for i, spec in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(spec, dict):
            raise CommsimError(f"{where}: must be a mapping like {{name: g0, kind: gpu}}")
        for key in ("name", "kind"):
            if key not in spec:
                raise CommsimError(f"{where}: missing field {key!r}")
        name = _node_name(spec["name"], f"{where}.name")
        if spec["kind"] not in KINDS:
            raise unknown(f"kind in {where}.kind", spec["kind"], KINDS)
        if name in G:
            raise CommsimError(f"{where}.name: node {name!r} is defined twice")
        G.add_node(name, **{k: v for k, v in spec.items() if k != "name"})


def _add_links(G: nx.DiGraph, links, ideal: bool = False) -> None:
    if not isinstance(links, list):
        raise CommsimError("links: must be a list of {src, dst, bandwidth, latency} mappings")
    for i, spec in enumerate(links):
        where = f"links[{i}]"
        if not isinstance(spec, dict):
            raise CommsimError(f"{where}: must be a mapping like "
                               "{src: a, dst: b, bandwidth: 50GB/s, latency: 1us}")
        for key in spec:
            if key not in LINK_FIELDS:
                raise CommsimError(f"{where}: {unknown('field', key, LINK_FIELDS)}")
        for key in ("src", "dst", "bandwidth", "latency"):
            if key not in spec:
                raise CommsimError(f"{where}: missing field {key!r}")
        ends = []
        for key in ("src", "dst"):
            node = _node_name(spec[key], f"{where}.{key}")
            if node not in G:
                raise CommsimError(f"{where}.{key}: "
                                   f"{unknown('node', node, map(str, G.nodes))}")
            ends.append(node)
        bw = parse_bandwidth(spec["bandwidth"], f"{where}.bandwidth")
        lat = parse_time(spec["latency"], f"{where}.latency")
        eff = parse_efficiency(spec.get("efficiency", 1.0), f"{where}.efficiency")
        cls = spec.get("class")
        if cls is not None and (not isinstance(cls, str) or not cls):
            raise CommsimError(f"{where}.class: {cls!r} must be a name, e.g. nvlink or spine")
        duplex = spec.get("duplex", True)
        if not isinstance(duplex, bool):
            raise CommsimError(f"{where}.duplex: {duplex!r} must be true or false")
        src, dst = ends
        if src == dst:
            raise CommsimError(f"{where}: src and dst are both {src!r}; a link joins two nodes")
        for u, v in ((src, dst), (dst, src)) if duplex else ((src, dst),):
            if G.has_edge(u, v):
                raise CommsimError(f"{where}: link {u!r} -> {v!r} is defined twice")
            G.add_edge(u, v, **link(bw, lat, 1.0 if ideal else eff, cls))


# -- writing -------------------------------------------------------------------------------

def _plain(value):
    """YAML-safe plain data (tuples to lists, numpy scalars to numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _fmt_bandwidth(bw: float):
    """``450GB/s`` when that reads back exactly, else the number of bytes/s."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6)):
        text = f"{bw / scale:.15g}{unit}"
        if parse_bandwidth(text) == bw:
            return text
    return float(bw)


def _fmt_latency(lat: float):
    """``1us`` / ``700ns`` when that reads back exactly, else seconds."""
    if lat == 0:
        return 0
    for unit, scale in (("us", 1e-6), ("ns", 1e-9)):
        text = f"{lat / scale:.15g}{unit}"
        if parse_time(text) == lat:
            return text
    return float(lat)


def dumps(G: nx.DiGraph, form: str = "explicit") -> str:
    """YAML text for ``G``: ``explicit`` nodes and links (exact: reads back to the same
    graph; edge attributes other than bandwidth, latency, efficiency and class are dropped,
    and a link with an efficiency is written at its line rate) or ``builder``
    (builder + params from ``G.graph``; valid only for an unmodified builder graph)."""
    data = {k: _plain(G.graph[k]) for k in _META if G.graph.get(k) not in (None, "")}
    if form == "builder":
        if not G.graph.get("builder"):
            raise CommsimError("form: builder needs a graph made by a builder; use explicit")
        data["builder"] = G.graph["builder"]
        data["params"] = {k: _plain(v) for k, v in G.graph.get("params", {}).items()
                          if v is not None}
    elif form == "explicit":
        data["nodes"] = [{"name": n, **_plain(attr)} for n, attr in G.nodes(data=True)]
        data["links"] = _explicit_links(G)
    else:
        raise unknown("form", form, ("explicit", "builder"))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def _explicit_links(G: nx.DiGraph) -> list[dict]:
    links, done = [], set()
    keys = ("bandwidth", "latency", "line_rate", "efficiency", "class")
    for u, v, attr in G.edges(data=True):
        if (u, v) in done:
            continue
        lat = attr["latency"]
        entry = {"src": u, "dst": v}
        if "efficiency" in attr and "line_rate" in attr and \
                link(attr["line_rate"], lat, attr["efficiency"])["bandwidth"] == attr["bandwidth"]:
            entry.update(bandwidth=_fmt_bandwidth(attr["line_rate"]), latency=_fmt_latency(lat),
                         efficiency=float(attr["efficiency"]))
        else:  # at line rate, or a bandwidth changed since: write the rate the graph uses
            entry.update(bandwidth=_fmt_bandwidth(attr["bandwidth"]), latency=_fmt_latency(lat))
        if attr.get("class"):
            entry["class"] = str(attr["class"])
        back = G.get_edge_data(v, u)
        if back is not None and all(back.get(k) == attr.get(k) for k in keys):
            done.add((v, u))
        else:
            entry["duplex"] = False
        done.add((u, v))
        links.append(entry)
    return links
