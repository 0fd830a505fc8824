"""The network a plan runs on: link classes, the path a group's traffic takes, what-ifs.

A :class:`Fabric` wraps a topology file (a preset name, a YAML path or a calibrated
profile). For the builders whose structure is known, ``dgx_cluster`` and ``leaf_spine``,
it prices a group of global ranks **analytically** from the builder's parameters: ranks
sit linearly on gpus (rank ``r`` on node ``r // gpus_per_node``, local index ``r %
gpus_per_node``, as :func:`commsim.workload.place_layout` puts them), so a group

- inside one node crosses ``nvlink`` (gpu -> NVSwitch -> gpu);
- across nodes on one rail leaf crosses ``nic`` (gpu -> PCIe -> NIC -> leaf -> NIC ->
  PCIe -> gpu; the narrower of PCIe and the NIC binds);
- across rails (without PXN) or leaf groups crosses ``spine`` as well.

``alpha`` is the path's latency (the sum of its links'), ``1 / beta`` the narrowest
bandwidth on it, where a spine link counts its **per-GPU share** of the leaf's uplinks
(``nic_bw / oversubscription``, line rates times efficiencies): the conservative view that
every GPU of a leaf sends across the spines at once. That is what makes
``oversubscription`` matter to the model. This needs no graph, so it scales to 100,000
gpus and to topologies grown beyond the file (:meth:`Fabric.grow`: more nodes, the same
node and link parameters). Other topologies (torus, fat tree, explicit links, profiles)
use their graph: :func:`commsim.model.alpha_beta` over the group's placement, and cannot
grow.

What-ifs (:meth:`Fabric.with_changes`) rebuild the topology from its builder's
parameters with some replaced (``nvlink_bw=2x``, ``nic_bw=800Gb/s``,
``oversubscription=1:1``, ``gpus_per_node=4``), read by :mod:`commsim.plan.whatif` (the
one reader for ``commsim plan --what-if`` and a sweep's ``what_if``).
"""

from __future__ import annotations

import copy
import inspect
import math
from functools import cached_property

import numpy as np

from commsim.errors import CommsimError
from commsim.units import parse_bandwidth

ANALYTIC = ("dgx_cluster", "leaf_spine")
# the counts the analytic path reads from the file itself (the builder checks them only
# when it builds the whole graph), with their least value
COUNTS = {"dgx_cluster": {"nodes": 1, "gpus_per_node": 1, "nodes_per_leaf": 1, "spines": 0},
          "leaf_spine": {"leaves": 1, "hosts_per_leaf": 1, "spines": 0}}
MAX_COUNT = 2**31   # each of them: past any machine, and two multiplied still fit an int64
# which link class a builder parameter changes (for "changes nothing, because ...")
PARAM_CLASS = {"nvlink": "nvlink", "pcie": "pcie", "nic": "nic", "spine": "spine",
               "oversubscription": "spine", "spines": "spine", "host": "host",
               "rail_optimized": "spine", "nodes_per_leaf": "spine", "pxn": "spine"}
# how far a class sits from the gpu: the classes of a path, inner first
CLASS_ORDER = ("nvlink", "pxn", "pcie", "host", "nic", "spine")


def _read(source: str) -> tuple[dict, str]:
    """The topology file's mapping and its name (preset name, path or profile), read by
    the one guarded reader (:func:`commsim.topology.spec.read_named_yaml`): an unknown
    name, a name no file can have, a file that is not UTF-8 or not YAML, one line each."""
    from commsim.topology import presets
    from commsim.topology.spec import find_preset, read_named_yaml

    data, path = read_named_yaml(source, "topology", find_preset, presets)
    if not isinstance(data, dict):
        raise CommsimError(f"topology: {str(path)!r} is not a topology mapping (name, "
                           "builder and params, or nodes and links)")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise CommsimError(f"{str(path)}: name: {name!r} must be a string")
    return data, name or path.stem


class Fabric:
    """A topology for planning: ``data`` is its file's mapping (``builder``, ``params``,
    or explicit ``nodes``/``links``)."""

    def __init__(self, data: dict, name: str, ngpus: int | None = None,
                 grown: bool = False) -> None:
        self.data = data
        self.name = name
        self.builder = data.get("builder")
        self.params = dict(data.get("params") or {})
        self.grown = grown
        self._ngpus = ngpus

    @classmethod
    def load(cls, source: str) -> Fabric:
        data, name = _read(source)
        fabric = cls(data, name)
        fabric.check()
        return fabric

    def check(self) -> None:
        """An analytic topology's parameters, checked now (one line each, not a traceback
        or an invalid layout later): the counts the analytic path reads as whole numbers,
        ``oversubscription`` as a positive number, and the rest by the builder itself on
        the 2-node probe of :attr:`link_params`."""
        if not self.analytic:
            return
        from commsim.plan.whatif import read_number, read_whole
        from commsim.topology.builders import BUILDERS

        field = f"topology {self.name!r} params:"
        defaults = inspect.signature(BUILDERS[self.builder]).parameters
        for key, least in COUNTS[self.builder].items():
            value = self.params.get(key)
            if key not in self.params or (value is None and defaults[key].default is None):
                continue    # absent, or null where the builder derives it (spines)
            self.params[key] = read_whole(key, value, field, least)
            if self.params[key] > MAX_COUNT:
                raise CommsimError(f"{field} {key}={value}: more than {MAX_COUNT:,}, beyond "
                                   "any machine; check the number")
        ratio = self.params.get("oversubscription")
        if ratio is not None and not read_number("oversubscription", ratio, field) > 0:
            raise CommsimError(f"{field} oversubscription={ratio}: must be a positive "
                               "ratio, e.g. 2 for 2:1")
        try:
            _ = self.link_params    # the builder's own checks, on a 2-node probe
        except CommsimError as exc:   # a bad value; an unknown parameter names the topology
            text = str(exc)
            raise CommsimError(text if text.startswith("topology ") else f"{field} {text}") \
                from None

    # -- the graph (built only when needed: simulation, generic topologies) -------------
    @cached_property
    def graph(self):
        from commsim.topology.spec import parse

        return parse(self.data, source=f"topology {self.name!r}", default_name=self.name)

    @property
    def analytic(self) -> bool:
        return self.builder in ANALYTIC and not self.data.get("links") \
            and not self.data.get("nodes")

    def param(self, key: str):
        """A builder parameter's value: the file's, else the builder's default."""
        if key in self.params:
            return self.params[key]
        from commsim.topology.builders import BUILDERS

        sig = inspect.signature(BUILDERS[self.builder])
        return sig.parameters[key].default

    @property
    def gpus_per_node(self) -> int:
        if self.builder == "dgx_cluster":
            return int(self.param("gpus_per_node"))
        if self.analytic:
            return 1
        g = self.graph.graph.get("params") or {}
        return int(g.get("gpus_per_node", 1) or 1)

    @property
    def ngpus(self) -> int:
        if self._ngpus is not None:
            return self._ngpus
        if self.builder == "dgx_cluster" and self.analytic:
            return int(self.param("nodes")) * self.gpus_per_node
        if self.builder == "leaf_spine" and self.analytic:
            return int(self.param("leaves")) * int(self.param("hosts_per_leaf"))
        from commsim.topology import gpus

        return len(gpus(self.graph))

    # -- growing and what-ifs -----------------------------------------------------------
    def grow(self, gpus: int) -> Fabric:
        """The same builder with enough nodes (leaves) for ``gpus`` gpus."""
        if not self.analytic:
            raise CommsimError(f"--gpus: {gpus} is more than the {self.ngpus} gpus of "
                               f"topology {self.name!r}, whose builder "
                               f"({self.builder or 'explicit links'}) cannot grow; use a "
                               "dgx_cluster or leaf_spine topology, or fewer gpus")
        data = copy.deepcopy(self.data)
        params = data.setdefault("params", {})
        if self.builder == "dgx_cluster":
            params["nodes"] = math.ceil(gpus / self.gpus_per_node)
        else:
            params["leaves"] = math.ceil(gpus / int(self.param("hosts_per_leaf")))
        return Fabric(data, self.name, None, grown=True)

    def with_changes(self, changes: dict, field: str = "--what-if") -> Fabric:
        """A copy with builder parameters changed (:func:`commsim.plan.whatif.apply_topology`:
        ``2x`` scales the current value, ``800Gb/s``, ``1:1``, ``4`` replace it; a
        ``gpus_per_node`` change keeps the gpu count; the node count is the plan's, not a
        what-if's), checked now (one line)."""
        from commsim.plan.whatif import apply_topology

        data = apply_topology(self.data, changes, field, name=self.name,
                              hidden=("nodes", "leaves"))
        out = Fabric(data, self.name, None, grown=self.grown)
        _ = out.link_params if out.analytic else out.graph   # validate now: one line
        return out

    # -- analytic link parameters --------------------------------------------------------
    @cached_property
    def link_params(self) -> dict[str, tuple[float, float]]:
        """``{class: (latency s, bandwidth bytes/s)}`` for the analytic builders, read from
        a 2-node (2-leaf) probe built with the same parameters, the spine's bandwidth as a
        per-gpu share of the leaf uplinks."""
        from commsim.topology.builders import BUILDERS
        from commsim.topology.efficiency import is_efficiency_param

        params = dict(self.params)
        if self.builder == "dgx_cluster":
            probe = dict(params, nodes=2, nodes_per_leaf=1, spines=1, spine_bw=None,
                         oversubscription=None)
            hosts = int(params.get("nodes_per_leaf") or 0) or None
            gpn = int(self.param("gpus_per_node"))
            rail = bool(self.param("rail_optimized"))
            nodes = int(self.param("nodes"))
            if hosts is None:
                hosts = nodes if rail else max(1, 32 // gpn)
            hosts_per_leaf = hosts if rail else hosts * gpn
            host_cls, host_bw_key = "nic", "nic_bw"
        else:
            probe = dict(params, leaves=2, spines=1, spine_bw=None, oversubscription=None)
            hosts_per_leaf = int(self.param("hosts_per_leaf"))
            host_cls, host_bw_key = "host", "host_bw"
        try:
            G = BUILDERS[self.builder](**probe, name="probe")
        except TypeError as exc:
            raise CommsimError(f"topology {self.name!r}: {exc}") from None
        out: dict[str, tuple[float, float]] = {}
        for _u, _v, d in G.edges(data=True):
            cls = d.get("class")
            if cls and cls not in out:
                out[cls] = (float(d["latency"]), float(d["bandwidth"]))
        # the spine: latency from the probe, bandwidth per gpu of the leaf's uplinks
        spine_eff = float(params.get("spine_efficiency", 1.0) or 1.0)
        line = parse_bandwidth(self.param(host_bw_key), host_bw_key)
        if self.param("spine_bw") is not None:
            spines = self.param("spines")
            spines = int(spines) if spines is not None else max(1, hosts_per_leaf // 2)
            share = spines * parse_bandwidth(self.param("spine_bw"), "spine_bw") \
                / hosts_per_leaf
        else:
            ratio = self.param("oversubscription")
            share = line / (float(ratio) if ratio is not None else 1.0)
        lat = out.get("spine", (0.0, 0.0))[0]
        out["spine"] = (lat, share * spine_eff)
        _ = host_cls, is_efficiency_param
        return out

    # -- pricing a group -----------------------------------------------------------------
    def group_path(self, groups: np.ndarray, placement_offset: int = 0
                   ) -> tuple[str, float, float, list[str]]:
        """``(bounding class, alpha, beta, classes)`` for groups of global ranks (rows of
        ``groups``), the worst pair from each group's first rank. Linear placement."""
        groups = np.asarray(groups, dtype=np.int64)
        if groups.ndim == 1:
            groups = groups[None, :]
        if groups.shape[1] < 2:
            return "none", 0.0, 0.0, []
        if self.analytic:
            return self._analytic_path(groups)
        return self._graph_path(groups[0].tolist())

    def _analytic_path(self, groups: np.ndarray) -> tuple[str, float, float, list[str]]:
        lp = self.link_params
        if self.builder == "dgx_cluster":
            gpn = int(self.param("gpus_per_node"))
            rail = bool(self.param("rail_optimized"))
            npl = self.param("nodes_per_leaf")
            nodes_total = math.ceil(self.ngpus / gpn)
            npl = int(npl) if npl else (nodes_total if rail else max(1, 32 // gpn))
            node = groups // gpn
            local = groups % gpn
            leafgrp = node // npl
            off_node = (node != node[:, :1]).any()
            if not off_node:
                classes = ["nvlink"]
            else:
                cross = (leafgrp != leafgrp[:, :1]).any()
                if rail:
                    cross = cross or bool(((local != local[:, :1]) &
                                           (node != node[:, :1])).any())
                classes = ["pcie", "nic"] + (["spine"] if cross else [])
                if (node == node[:, :1]).sum(axis=1).max() > 1:
                    classes = ["nvlink"] + classes
            if classes == ["nvlink"]:
                lat, bw = lp["nvlink"]
                return "nvlink", 2 * lat, 1 / bw, classes
            path = [c for c in classes if c != "nvlink"]
        else:
            hpl = int(self.param("hosts_per_leaf"))
            leaf = groups // hpl
            path = ["host"] + (["spine"] if (leaf != leaf[:, :1]).any() else [])
            classes = path
        alpha = 2 * sum(lp[c][0] for c in path)
        bound = min(path, key=lambda c: (lp[c][1], CLASS_ORDER.index(c)))
        return bound, alpha, 1 / lp[bound][1], classes

    def _graph_path(self, ranks: list[int]) -> tuple[str, float, float, list[str]]:
        from commsim import model
        from commsim.topology import gpus
        from commsim.workload.layout import group_links, link_class

        G = self.graph
        nodes = gpus(G)
        placement = [nodes[r] for r in ranks]
        alpha, beta = model.alpha_beta(G, len(ranks), placement)
        classes = list(group_links(G, nodes, [ranks]))
        bound = "link"
        for u, v, d in G.edges(data=True):
            if abs(d["bandwidth"] - 1 / beta) <= 1e-9 * d["bandwidth"]:
                cls = link_class(G, u, v)
                if cls in classes:
                    bound = cls
                    break
        return bound, alpha, beta, classes

    def intra_node(self) -> tuple[float, float]:
        """``(alpha, beta)`` inside a node (nvlink) for two-level algorithms."""
        if self.analytic and self.builder == "dgx_cluster":
            lat, bw = self.link_params["nvlink"]
            return 2 * lat, 1 / bw

        raise CommsimError("intra-node links are known only for dgx_cluster topologies")

    def describe(self) -> str:
        extra = " (grown)" if self.grown else ""
        return f"{self.name}{extra}: {self.ngpus} gpus, {self.gpus_per_node} a node"


def param_class(key: str) -> str | None:
    """The link class a builder parameter changes (``nic_bw`` -> ``nic``)."""
    for prefix, cls in PARAM_CLASS.items():
        if key.startswith(prefix):
            return cls
    return None
