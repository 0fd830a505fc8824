"""Pictures of network topologies, laid out the way people draw each family.

:func:`family` names a graph's family: from ``G.graph["builder"]`` when the graph's
attributes fit that builder, else from node kinds and attributes (``coord`` on torus
routers, ``level`` on switches, ``node``/``rail`` on DGX NICs, ``group`` on dragonfly
routers, ``pod`` in fat-trees). :func:`scene` lays a graph out as plain data (marks,
links, boxes, notes; tests read it) and :func:`render` draws a scene with matplotlib,
into PNG, SVG or any format matplotlib writes.

- **ring**: a circle of routers, each gpu beside its router; **torus**: a grid,
  wrap-around links as dashed arcs (a 3D torus: its planes side by side);
- **fat-tree, leaf-spine, star**: layers, gpus at the bottom, then edge/leaf,
  aggregation, core/spine; the links between two layers labelled with their speed, each
  switch layer with its oversubscription (line rate down / line rate up of its fullest
  switch; the builder's figure when the graph has one);
- **DGX clusters**: each node a box holding its gpus, NVSwitch and NICs, NIC i of every
  node wired to its rail's leaf in that rail's colour, spines above;
- **dragonfly**: groups as clusters around a circle, local links inside, global across;
- **full mesh**: gpus on a circle; anything else: switches in layers when they all have
  a ``level``, else a spring layout.

Above ``summarize_above`` gpus (:data:`SUMMARIZE_ABOVE`) a fat-tree, leaf-spine, star,
DGX cluster or dragonfly is summarized: one pod / leaf / node / group drawn in full, the
rest collapsed into labelled boxes with counts, long rows of switches or gpus cut short
with "+N more". Rings and tori are drawn in full at any size.

Reads only the graph (networkx) and imports only :mod:`commsim.errors` (matplotlib when
rendering), like the rest of :mod:`commsim.report`.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import networkx as nx

from commsim.errors import CommsimError

__all__ = ["FAMILIES", "SUMMARIZE_ABOVE", "Scene", "TooLarge", "family", "render", "scene"]

SUMMARIZE_ABOVE = 64  # gpus; above it the families that can be are summarized
ROW_CAP = 16          # at most this many marks a row in a summary ("+N more" after them)
FAMILIES = ("ring", "torus", "fat_tree", "leaf_spine", "star", "dgx", "dragonfly",
            "full_mesh", "tree", "other")
SUMMARIZABLE = ("fat_tree", "leaf_spine", "star", "dgx", "dragonfly")

KIND_COLORS = {"gpu": "#76b900", "nic": "#f0a30a", "switch": "#1f77b4", "host": "#9467bd"}
KIND_SHAPES = {"gpu": "o", "nic": "D", "switch": "s", "host": "^"}
CLASS_COLORS = {"nvlink": "#4d8c00", "pcie": "#9a9a9a", "pxn": "#bcbd22", "nic": "#f0a30a",
                "spine": "#1f77b4", "host": "#7f7f7f", "aggregation": "#2ca02c",
                "core": "#d62728", "torus": "#1f77b4", "injection": "#b0b0b0",
                "local": "#2ca02c", "global": "#d62728", "direct": "#1f77b4"}
OTHER_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#9467bd", "#ff7f0e")
RAIL_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628",
               "#f781bf", "#17becf")
_BUILDER_FAMILY = {"ring": "ring", "torus": "torus", "fat_tree": "fat_tree",
                   "leaf_spine": "leaf_spine", "star": "star", "dgx_cluster": "dgx",
                   "dragonfly": "dragonfly", "fully_connected": "full_mesh"}
_FAMILY_TEXT = {"ring": "ring", "torus": "torus", "fat_tree": "fat-tree",
                "leaf_spine": "leaf-spine", "star": "star (one switch)",
                "dgx": "DGX nodes on a leaf-spine fabric", "dragonfly": "dragonfly",
                "full_mesh": "full mesh", "tree": "switches in levels",
                "other": "spring layout"}


class TooLarge(CommsimError):
    """The picture would hold more than ``max_nodes`` marks (``nodes`` says how many)."""

    def __init__(self, nodes: int, max_nodes: int):
        super().__init__(f"the drawing would have {nodes} nodes, more than {max_nodes}")
        self.nodes, self.max_nodes = nodes, max_nodes


class _Unfit(Exception):
    """The graph does not have the shape its family's layout needs."""


# -- the scene: what a picture holds, as plain data --------------------------------------------

@dataclass
class Mark:
    """A drawn node: a graph node, or a stand-in (``more``: "+N more")."""

    x: float
    y: float
    kind: str                 # gpu, nic, switch, host, or "more" (a "+N more" text)
    label: str = ""
    where: str = "below"      # label below / above / right / left / out (away from origin)
    origin: tuple = (0.0, 0.0)


@dataclass
class Link:
    points: list              # [(x, y), ...]: two points for a straight line, more for a curve
    cls: str                  # link class (legend entry)
    color: str | None = None  # None: the class's colour
    width: float = 0.8
    dashed: bool = False
    alpha: float = 0.75


@dataclass
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    style: str = "node"       # node (a DGX node), group (a pod), more (collapsed), switch, circle
    label_at: str = "top"     # top (inside, upper left), center, below (outside)


@dataclass
class Note:
    x: float
    y: float
    text: str
    ha: str = "left"
    size: float = 7.5
    color: str = "#333333"
    bold: bool = False


@dataclass
class Scene:
    name: str
    family: str
    summarized: bool
    title: str
    subtitle: str
    marks: dict = field(default_factory=dict)    # graph node (or stand-in id) -> Mark
    links: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    class_text: dict = field(default_factory=dict)  # link class -> legend text
    kind_counts: dict = field(default_factory=dict)  # node kind -> nodes in the graph
    rails: int = 0            # > 0: nic links coloured by rail (that many rails)
    size: tuple = (12.0, 8.0)  # inches
    equal: bool = False       # equal aspect (circles stay round)
    mark_size: float = 60.0   # points^2
    out_gap: float = 0.1      # data units between a mark and its "out" label
    label_size: float = 6.5
    threshold: int = SUMMARIZE_ABOVE  # gpus above which it was (or would be) summarized

    @property
    def drawn(self) -> int:
        """Graph nodes drawn as marks, plus boxes: the size of the picture."""
        return sum(m.kind != "more" for m in self.marks.values()) + len(self.boxes)


# -- reading the graph -------------------------------------------------------------------------

def _gb(rate: float) -> str:
    gbps = rate / 1e9
    return f"{gbps:,.0f}" if gbps >= 1000 else f"{gbps:.4g}"


def _line_rate(attr: dict) -> float:
    return attr.get("line_rate", attr["bandwidth"])


def _rate_text(line: float, eff: float) -> str:
    text = f"{_gb(line)} GB/s"
    if abs(line - eff) > 1e-9 * line:
        text += f" (eff. {_gb(eff)})"
    return text


def _ratio_text(ratio: float) -> str:
    if abs(ratio - 1) < 1e-9:
        return "1:1, non-blocking"
    return f"{ratio:.3g}:1 oversubscribed" if ratio > 1 else f"1:{1 / ratio:.3g}"


class _Graph:
    """The facts about ``G`` every layout reads, computed once."""

    def __init__(self, G: nx.DiGraph):
        self.G = G
        self.kind = {n: G.nodes[n].get("kind") for n in G}
        self.nbrs: dict = defaultdict(list)
        self.cables: list = []   # (u, v, attr, cls): one per cable (both directions) or lone edge
        seen = set()
        for u, v, attr in G.edges(data=True):
            if (v, u) in seen:
                continue
            seen.add((u, v))
            self.cables.append((u, v, attr, self._cls(u, v, attr)))
            self.nbrs[u].append(v)
            self.nbrs[v].append(u)
        self.gpus = [n for n in G if self.kind[n] == "gpu"]
        self.switches = [n for n in G if self.kind[n] == "switch"]
        self.nics = [n for n in G if self.kind[n] == "nic"]

    def _cls(self, u, v, attr) -> str:
        cls = attr.get("class")
        if cls:
            return str(cls)
        return "-".join(sorted((str(self.kind[u]), str(self.kind[v]))))

    def attr(self, n, key, default=None):
        return self.G.nodes[n].get(key, default)

    def class_text(self) -> dict:
        rates: dict = defaultdict(set)
        count: Counter = Counter()
        for _u, _v, attr, cls in self.cables:
            rates[cls].add((_line_rate(attr), attr["bandwidth"]))
            count[cls] += 1
        out = {}
        for cls, pairs in rates.items():
            if len(pairs) == 1:
                speed = _rate_text(*next(iter(pairs)))
            else:
                lo, hi = min(p[0] for p in pairs), max(p[0] for p in pairs)
                speed = f"{_gb(lo)}-{_gb(hi)} GB/s"
            out[cls] = f"{cls}: {speed}, {count[cls]} cable{'s' * (count[cls] != 1)}"
        return out

    def layer_speed(self, lower: set, upper: set) -> str:
        """The classes and line rates of the cables between two sets of nodes."""
        found: dict = defaultdict(set)
        for u, v, attr, cls in self.cables:
            if (u in lower and v in upper) or (u in upper and v in lower):
                found[cls].add((_line_rate(attr), attr["bandwidth"]))
        parts = []
        for cls, pairs in found.items():
            if len(pairs) == 1:
                parts.append(f"{cls} links: {_rate_text(*next(iter(pairs)))}" + (
                    " per leaf-spine pair\n(one link stands for a bundle of cables)"
                    if cls == "spine" else ""))
            else:
                lo, hi = min(p[0] for p in pairs), max(p[0] for p in pairs)
                parts.append(f"{cls} links: {_gb(lo)}-{_gb(hi)} GB/s")
        return "; ".join(parts)

    def oversubscription(self, layer: list, below: set, above: set) -> tuple | None:
        """Line rate into the fullest switch of ``layer`` from ``below`` over its line rate
        to ``above``: (ratio, its links as text); None when the layer has no links up."""
        worst = None
        down_of: dict = defaultdict(Counter)
        up_of: dict = defaultdict(Counter)
        members = set(layer)
        for u, v, attr, _cls in self.cables:
            for s, o in ((u, v), (v, u)):
                if s in members:
                    if o in below:
                        down_of[s][_line_rate(attr)] += 1
                    elif o in above:
                        up_of[s][_line_rate(attr)] += 1
        for s in layer:
            down = sum(r * k for r, k in down_of[s].items())
            up = sum(r * k for r, k in up_of[s].items())
            if up > 0 and down > 0 and (worst is None or down / up > worst[0]):
                worst = (down / up, s)
        if worst is None:
            return None
        ratio, s = worst

        def side(c: Counter) -> str:
            return " + ".join(f"{k} x {_gb(r)}" for r, k in sorted(c.items()))
        return ratio, f"per switch {side(down_of[s])} GB/s down, {side(up_of[s])} GB/s up"


# -- family -------------------------------------------------------------------------------

def family(G: nx.DiGraph) -> str:
    """The family of ``G``, one of :data:`FAMILIES`: the builder's (``G.graph["builder"]``)
    when the graph's node attributes fit it, else read from the node kinds and attributes."""
    g = G if isinstance(G, _Graph) else _Graph(G)
    builder = g.G.graph.get("builder")
    guess = _BUILDER_FAMILY.get(builder) if isinstance(builder, str) else None
    if guess and _fits(g, guess):
        return guess
    for fam in ("ring", "torus", "dgx", "dragonfly", "fat_tree", "leaf_spine", "star",
                "full_mesh", "tree"):
        if _fits(g, fam):
            return fam
    return "other"


def _levels(g: _Graph) -> dict | None:
    levels = {s: g.attr(s, "level") for s in g.switches}
    if not levels or any(not isinstance(v, int) or isinstance(v, bool) for v in levels.values()):
        return None
    return levels


def _fits(g: _Graph, fam: str) -> bool:
    """Whether ``g`` has what ``fam``'s layout needs (every node placed by it)."""
    if not g.gpus or any(k not in KIND_COLORS for k in g.kind.values()):
        return False
    if fam in ("ring", "torus"):
        coords = [g.attr(s, "coord") for s in g.switches]
        if not coords or any(not isinstance(c, (list, tuple)) or not c for c in coords):
            return False
        dims = {len(c) for c in coords}
        if len(dims) != 1 or (dims.pop() == 1) != (fam == "ring") or len(coords[0]) > 3:
            return False
        return (set(g.kind.values()) <= {"gpu", "switch"}
                and all(len([v for v in g.nbrs[n] if g.kind[v] == "switch"]) >= 1
                        for n in g.gpus))
    if fam == "dgx":
        levels = _levels(g)
        if levels is None or not g.nics:
            return False
        in_node = [n for n in g.G if g.kind[n] in ("gpu", "nic")] + \
            [s for s in g.switches if levels[s] == 0]
        fabric = [s for s in g.switches if levels[s] > 0]
        return (set(g.kind.values()) <= {"gpu", "nic", "switch"}
                and all(isinstance(g.attr(n, "node"), int) for n in in_node)
                and all(g.attr(s, "node") is None and levels[s] in (1, 2) for s in fabric))
    if fam == "dragonfly":
        groups = {g.attr(s, "group") for s in g.switches}
        return (set(g.kind.values()) <= {"gpu", "switch"} and None not in groups
                and len(groups) >= 2
                and all(any(g.kind[v] == "switch" for v in g.nbrs[n]) for n in g.gpus))
    if fam == "full_mesh":
        n = len(g.gpus)
        return (set(g.kind.values()) == {"gpu"} and n >= 2
                and len({frozenset((u, v)) for u, v, *_ in g.cables if u != v})
                == n * (n - 1) // 2)
    levels = _levels(g)
    if levels is None or any(k not in ("gpu", "switch", "host", "nic") for k in g.kind.values()):
        return False
    top = max(levels.values())
    if fam == "fat_tree":
        return (set(levels.values()) == {1, 2, 3} and not g.nics
                and all(g.attr(s, "pod") is not None for s in g.switches if levels[s] < 3)
                and _layered_ok(g, levels))
    if fam == "leaf_spine":
        return set(levels.values()) == {1, 2} and not g.nics and _layered_ok(g, levels)
    if fam == "star":
        return len(g.switches) == 1 and top == 1 and not g.nics and _layered_ok(g, levels)
    if fam == "tree":
        return _layered_ok(g, levels)
    return False


def _layered_ok(g: _Graph, levels: dict) -> bool:
    """No cable inside a layer (switches of one level, or two endpoints)."""
    for u, v, _a, _c in g.cables:
        ku, kv = g.kind[u], g.kind[v]
        if ku == kv == "switch" and levels[u] == levels[v]:
            return False
        if ku != "switch" and kv != "switch" and {ku, kv} != {"gpu", "nic"}:
            return False
    return True


# -- the scene, family by family -------------------------------------------------------------

def scene(G: nx.DiGraph, summarize_above: int = SUMMARIZE_ABOVE,
          max_nodes: int | None = None) -> Scene:
    """Lay ``G`` out as its family is drawn (see the module's text). Families that can be
    summarized are, above ``summarize_above`` gpus. Raises :class:`TooLarge` when the
    picture would draw more than ``max_nodes`` graph nodes (before laying it out)."""
    g = _Graph(G)
    fam = family(g)
    summarize = fam in SUMMARIZABLE and len(g.gpus) > summarize_above
    if max_nodes is not None and not summarize and G.number_of_nodes() > max_nodes:
        raise TooLarge(G.number_of_nodes(), max_nodes)
    sc = _new_scene(g, fam, summarize, summarize_above)
    layout = {"ring": _ring, "torus": _torus, "fat_tree": _layered, "leaf_spine": _layered,
              "star": _layered, "tree": _layered, "dgx": _dgx, "dragonfly": _dragonfly,
              "full_mesh": _mesh}.get(fam)
    if layout is not None:
        try:
            layout(g, sc)
        except _Unfit:
            sc = None
        else:
            placed = {n for n in sc.marks if n in G}
            if not summarize and len(placed) != G.number_of_nodes():
                sc = None   # a node the layout does not know of: draw it plainly
    if layout is None or sc is None:
        if max_nodes is not None and G.number_of_nodes() > max_nodes:
            raise TooLarge(G.number_of_nodes(), max_nodes)
        sc = _new_scene(g, "other", False, summarize_above)
        _spring(g, sc)
    if max_nodes is not None and sc.drawn > max_nodes:
        raise TooLarge(sc.drawn, max_nodes)
    return sc


def _new_scene(g: _Graph, fam: str, summarize: bool, threshold: int) -> Scene:
    name = str(g.G.graph.get("name", "topology"))
    kinds = Counter(g.kind.values())
    counts = [f"{kinds['gpu']} gpus"]
    counts += [f"{kinds[k]} {k}{('es' if k == 'switch' else 's') * (kinds[k] != 1)}"
               for k in ("switch", "nic", "host") if kinds[k]]
    counts.append(f"{len(g.cables)} cables")
    return Scene(name=name, family=fam, summarized=summarize,
                 title=f"{name}: {', '.join(counts)}", subtitle=_FAMILY_TEXT[fam],
                 class_text=g.class_text(), kind_counts=dict(kinds), threshold=threshold)


def _mark(sc: Scene, n, x: float, y: float, kind: str, label: str = "",
          where: str = "below", origin: tuple = (0.0, 0.0)) -> None:
    sc.marks[n] = Mark(float(x), float(y), kind, label, where, origin)


def _link(sc: Scene, a, b, cls: str, **style) -> None:
    pa, pb = sc.marks[a], sc.marks[b]
    sc.links.append(Link([(pa.x, pa.y), (pb.x, pb.y)], cls, **style))


def _all_cables(g: _Graph, sc: Scene, skip: set = frozenset(), **style) -> None:
    """A straight line for every cable between two marks, except pairs in ``skip``."""
    for u, v, _attr, cls in g.cables:
        if u in sc.marks and v in sc.marks and frozenset((u, v)) not in skip and u != v:
            _link(sc, u, v, cls, **style)


def _density(sc: Scene, marks: int) -> None:
    sc.mark_size = 70.0 if marks <= 48 else 40.0 if marks <= 160 else 14.0 if marks <= 600 else 5.0
    sc.label_size = 6.5 if marks <= 48 else 5.5


def _attached(g: _Graph, n):
    """The first switch a gpu hangs off."""
    for v in g.nbrs[n]:
        if g.kind[v] == "switch":
            return v
    raise _Unfit(n)


# ring and torus ---------------------------------------------------------------------------

def _ring(g: _Graph, sc: Scene) -> None:
    routers = sorted(g.switches, key=lambda s: tuple(g.attr(s, "coord")))
    n = len(routers)
    at = {r: i for i, r in enumerate(routers)}
    hosted: dict = defaultdict(list)
    for gpu in g.gpus:
        hosted[_attached(g, gpu)].append(gpu)
    labels = n <= 32
    for r, i in at.items():
        theta = math.pi / 2 - 2 * math.pi * i / n
        _mark(sc, r, math.cos(theta), math.sin(theta), "switch")
        for j, gpu in enumerate(hosted[r]):
            t = theta + (j - (len(hosted[r]) - 1) / 2) * 0.6 * math.pi / n
            _mark(sc, gpu, 1.32 * math.cos(t), 1.32 * math.sin(t), "gpu",
                  gpu if labels else "", "out")
    _all_cables(g, sc, width=1.6 if n <= 32 else 0.8)
    sc.equal, sc.size = True, (8.0, 8.6)
    _density(sc, 2 * n)
    sc.subtitle = f"ring of {n} routers on a circle, each gpu on its own router"
    sc.notes.append(Note(0, 0, f"ring of {n}", ha="center", size=10, color="#555555"))


def _torus(g: _Graph, sc: Scene) -> None:
    coord = {s: tuple(g.attr(s, "coord")) for s in g.switches}
    dims = tuple(max(c[i] for c in coord.values()) + 1 for i in range(len(next(iter(
        coord.values())))))
    rows, cols = dims[-2], dims[-1]
    planes = dims[0] if len(dims) == 3 else 1
    gap = cols + 1.5

    def place(c):
        plane = c[0] if len(dims) == 3 else 0
        return plane * gap + c[-1], -c[-2]
    for s, c in coord.items():
        x, y = place(c)
        _mark(sc, s, x, y, "switch")
    labels = len(g.gpus) <= 64
    for gpu in g.gpus:
        r = _attached(g, gpu)
        x, y = place(coord[r])
        _mark(sc, gpu, x + 0.3, y - 0.3, "gpu", gpu if labels else "", "right")
    special, hidden = set(), 0
    for u, v, _a, cls in g.cables:
        if u not in coord or v not in coord:
            continue
        cu, cv = coord[u], coord[v]
        diff = [i for i in range(len(dims)) if cu[i] != cv[i]]
        if len(dims) == 3 and 0 in diff:
            special.add(frozenset((u, v)))
            hidden += 1
            continue
        if len(diff) == 1 and abs(cu[diff[0]] - cv[diff[0]]) > 1:
            special.add(frozenset((u, v)))
            (x0, y0), (x1, y1) = place(cu), place(cv)
            axis = diff[0]
            if axis == len(dims) - 1:   # along a row: bow upwards
                ctrl = ((x0 + x1) / 2, y0 + 0.62)
            else:                       # along a column: bow to the left
                ctrl = (x0 - 0.62, (y0 + y1) / 2)
            sc.links.append(Link(_bezier((x0, y0), ctrl, (x1, y1)), cls, dashed=True,
                                 width=1.0, alpha=0.6))
    _all_cables(g, sc, special, width=1.6)
    label = "x".join(map(str, dims))
    sc.subtitle = f"{len(dims)}D torus {label}: routers in a grid, each gpu on its own " \
        "router; wrap-around links dashed"
    if hidden:
        sc.notes.append(Note(0, -rows - 0.2, f"{hidden} links between neighbouring planes "
                             "(first axis) not drawn", size=8))
    width = planes * gap
    sc.equal = True
    sc.size = (min(16.0, max(7.5, 1.0 * width + 2)), min(14.0, max(7.5, 1.0 * rows + 3)))
    _density(sc, 2 * len(g.gpus))


def _bezier(p0, c, p1, steps: int = 24) -> list:
    pts = []
    for i in range(steps + 1):
        t = i / steps
        pts.append(((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * c[0] + t * t * p1[0],
                    (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * c[1] + t * t * p1[1]))
    return pts


# layers: star, leaf-spine, fat-tree, any tree ---------------------------------------------

_LAYER_NAMES = {"leaf_spine": {1: "leaves", 2: "spines"}, "star": {1: "switch"},
                "fat_tree": {1: "edge", 2: "aggregation", 3: "core"}}
_UNIT = {"leaf_spine": ("leaf", "leaves"), "fat_tree": ("pod", "pods")}
_DY = 1.35   # between layers


def _layered(g: _Graph, sc: Scene) -> None:
    levels = _levels(g)
    if levels is None:
        raise _Unfit()
    ends = [n for n in g.G if g.kind[n] in ("gpu", "host")]
    layers = [ends]
    names = ["gpus" if not any(g.kind[n] == "host" for n in ends) else "gpus and hosts"]
    if g.nics:
        layers.append(list(g.nics))
        names.append("nics")
    for lv in sorted(set(levels.values())):
        layers.append([s for s in g.switches if levels[s] == lv])
        names.append(_LAYER_NAMES.get(sc.family, {}).get(lv, f"level-{lv} switches"))
    if any(not layer for layer in layers):
        raise _Unfit()
    unit = _unit_of(g, sc.family, levels)
    ys = [_DY * i for i in range(len(layers))]
    top, keep, hidden_units = -1, None, []
    if sc.summarized:
        shown, cut, top, keep, hidden_units = _summary_rows(layers, unit)
    else:
        shown, cut = layers, [0] * len(layers)
    # the units' layers (all layers when nothing is collapsed) bottom up, then the box of
    # the collapsed units, then the layers above the units across the whole width
    split = top + 1 if hidden_units else len(layers)
    xs = _bottom_row(g, shown[0], unit)
    lo, hi = min(xs.values()), max(xs.values())
    for i in range(1, split):
        xs.update(_row_positions(g, shown[i], shown[i - 1], xs, (lo, hi)))
    right = hi
    for i in range(split):
        if cut[i]:
            end = max(xs[n] for n in shown[i]) + 1.3
            _mark(sc, ("more", i), end, ys[i], "more", f"+{cut[i]} more")
            right = max(right, end + 0.5)
    if hidden_units:
        x0, x1 = right + 1.6, right + 7.6
        right = x1
    for i in range(split, len(layers)):
        xs.update(_row_positions(g, shown[i], shown[i - 1], xs, (lo, right), spread=True))
        if cut[i]:
            end = max(xs[n] for n in shown[i]) + 1.3
            _mark(sc, ("more", i), end, ys[i], "more", f"+{cut[i]} more")
            right = max(right, end + 0.5)
    for i, row in enumerate(shown):
        prefix = _prefix(row) if len(row) > 20 else ""
        for n in row:
            where = "below" if i == 0 else "above" if i == len(layers) - 1 else "right"
            _mark(sc, n, xs[n], ys[i], g.kind[n], str(n)[len(prefix):], where)
        if prefix:
            names[i] += f" (numbered: {prefix}N)"
    if hidden_units:
        _more_box(g, sc, layers, names, ys, (x0, x1), top, keep, hidden_units, unit)
    if sc.family == "fat_tree":   # a box around each pod drawn in full
        pods: dict = defaultdict(list)
        for n, m in sc.marks.items():
            if n in g.G and unit(n) is not None:
                pods[unit(n)].append(m)
        for p, ms in pods.items():
            sc.boxes.append(Box(min(m.x for m in ms) - 0.5, ys[0] - 0.6,
                                max(m.x for m in ms) + 0.6, ys[2] + 0.45, f"pod {p}",
                                "group", "below"))
    _all_cables(g, sc, width=0.9, alpha=0.6)
    # layer names on the left; link speeds between layers and oversubscription on the right
    for i, row in enumerate(layers):
        name, _, extra = names[i].partition(" (")
        sc.notes.append(Note(lo - 1.2, ys[i], f"{name} ({len(row)})" + (
            f"\n({extra}" if extra else ""), ha="right", size=8.5, bold=True))
    members = [set(row) for row in layers]
    at = right + 1.2
    for i in range(len(layers) - 1):
        speed = g.layer_speed(members[i], members[i + 1])
        if speed:
            sc.notes.append(Note(at, (ys[i] + ys[i + 1]) / 2, speed, color="#1f3f7f"))
    for i in range(1, len(layers) - 1):
        if g.kind[layers[i][0]] != "switch":
            continue
        found = g.oversubscription(layers[i], members[i - 1], members[i + 1])
        if found:
            ratio, detail = found
            builder_ratio = g.G.graph.get("oversubscription")
            if sc.family == "leaf_spine" and isinstance(builder_ratio, (int, float)) \
                    and builder_ratio > 0:   # the builder's figure, from its line rates
                ratio = builder_ratio
            sc.notes.append(Note(at, ys[i], f"{names[i].split(' (')[0]}: "
                                 f"{_ratio_text(ratio)}\n({detail})", color="#7f1f1f"))
    if sc.summarized:
        if hidden_units:
            what = f"pod {keep}" if sc.family == "fat_tree" else str(keep)
            what += " drawn in full, the rest collapsed into a box with counts"
        else:
            what = f"the first {ROW_CAP - 1} of a row drawn, the rest counted"
        sc.subtitle = f"{_FAMILY_TEXT[sc.family]}; summarized above {sc.threshold} " \
            f"gpus: {what}"
    _density(sc, len(sc.marks))
    sc.size = (min(17.0, max(11.0, 0.3 * (right - lo) + 7.0)), 2.4 + 1.25 * len(layers))


def _prefix(row: list) -> str:
    """The letters every name in ``row`` starts with (``gpu`` of gpu0, gpu1 ...)."""
    names = [str(n) for n in row]
    prefix = names[0].rstrip("0123456789")
    return prefix if prefix and all(n.startswith(prefix) and n[len(prefix):].isdigit()
                                    for n in names) else ""


def _unit_of(g: _Graph, fam: str, levels: dict):
    """The repeated unit a node belongs to (pod of a fat-tree, leaf of a leaf-spine), or
    None (the layers above the units, and families without units)."""
    if fam == "fat_tree":
        return lambda n: g.attr(n, "pod") if g.kind[n] != "switch" or levels[n] < 3 else None
    if fam == "leaf_spine":
        leaf = {}
        for s in g.switches:
            if levels[s] == 1:
                leaf[s] = s
                for v in g.nbrs[s]:
                    if g.kind[v] != "switch":
                        leaf[v] = s
        return lambda n: leaf.get(n)
    return lambda n: None


def _summary_rows(layers: list, unit) -> tuple:
    """What a summary draws: the first unit's nodes in the units' layers, every node in the
    layers above; rows longer than :data:`ROW_CAP` cut short. Returns (rows, nodes cut per
    row, index of the units' top layer, the unit kept, the units collapsed)."""
    units = []
    for n in layers[0]:
        u = unit(n)
        if u is not None and u not in units:
            units.append(u)
    keep = units[0] if units else None
    top = max((i for i, row in enumerate(layers) if any(unit(n) is not None for n in row)),
              default=-1)
    shown, cut = [], []
    for i, row in enumerate(layers):
        if i <= top:
            row = [n for n in row if unit(n) == keep]
        kept = row[:ROW_CAP - 1] if len(row) > ROW_CAP else row
        shown.append(kept)
        cut.append(len(row) - len(kept))
    return shown, cut, top, keep, units[1:]


def _bottom_row(g: _Graph, row: list, unit) -> dict:
    """x of the endpoints, left to right, with a gap where the switch above them or their
    unit changes."""
    xs: dict = {}
    x, last_parent, last_unit = 0.0, None, None
    for n in row:
        parent = next((v for v in g.nbrs[n] if g.kind[v] in ("switch", "nic")), None)
        if xs:
            x += 1.0 + (1.2 if unit(n) != last_unit else 0.6 if parent != last_parent else 0)
        xs[n] = x
        last_parent, last_unit = parent, unit(n)
    return xs


def _row_positions(g: _Graph, row: list, below: list, xs: dict, extent: tuple,
                   spread: bool = False) -> dict:
    """x of a row of switches: above the middle of what each connects below (spread when
    several share the same nodes below), or, when that would crowd them or ``spread``,
    evenly across ``extent`` in the row's own order."""
    out: dict = {}
    under_set = {n for n in below if n in xs}
    groups: dict = defaultdict(list)
    for n in row:
        groups[frozenset(v for v in g.nbrs[n] if v in under_set)].append(n)
    lo, hi = extent
    for key, members in groups.items():
        if not key:
            continue
        under = sorted(xs[v] for v in key)
        if len(members) > 1 and under[-1] - under[0] > 0.5 * (hi - lo):
            spread = True   # switches that each reach across the row: keep their own order
        if len(members) == len(under):
            spots = under
        else:
            mid = (under[0] + under[-1]) / 2
            half = max((under[-1] - under[0]) / 2, 0.8 * (len(members) - 1))
            spots = [mid - half + (j + 0.5) * 2 * half / len(members)
                     for j in range(len(members))]
        out.update(zip(members, spots))
    placed = sorted(out.values())
    if spread or len(out) != len(row) or any(b - a < 0.9 for a, b in zip(placed, placed[1:])):
        span = max(hi - lo, 1.0 * (len(row) - 1))
        mid = (lo + hi) / 2
        out = {n: mid - span / 2 + (j + 0.5) * span / len(row) for j, n in enumerate(row)}
    return out


def _more_box(g: _Graph, sc: Scene, layers: list, names: list, ys: list, span: tuple,
              top: int, keep, hidden: list, unit) -> None:
    """The box standing for the collapsed units, wired to each drawn node of the layer
    above them that they connect to."""
    x0, x1 = span
    word, plural = _UNIT.get(sc.family, ("unit", "units"))
    hidden_set = set(hidden)
    counts = [sum(unit(n) in hidden_set for n in layers[i]) for i in range(top + 1)]
    first = f"{word} {keep}" if word == "pod" else str(keep)
    lines = [f"{len(hidden)} more {plural if len(hidden) > 1 else word}", f"like {first}",
             f"(pods {_range(hidden)})" if word == "pod" else f"({_range(hidden)})", ""]
    lines += [f"{c} {names[i].split(' (')[0]}" + (" switches" if i and sc.family == "fat_tree"
                                                   else "")
              for i, c in enumerate(counts) if c and not (i == top and c == len(hidden))]
    sc.boxes.append(Box(x0, ys[0] - 0.5, x1, ys[top] + 0.4, "\n".join(lines), "more",
                        "center"))
    if top + 1 >= len(layers):
        return
    inside = {n for n in layers[top] if unit(n) in hidden_set}
    wired, cls_of = [], {}
    for u, v, _a, cls in g.cables:
        for a, b in ((u, v), (v, u)):
            if a in inside and b in sc.marks and b not in cls_of:
                cls_of[b] = cls
                wired.append(b)
    wired.sort(key=lambda n: sc.marks[n].x)
    for j, n in enumerate(wired):
        px = x0 + 0.4 + (j + 0.5) * (x1 - x0 - 0.8) / len(wired)
        m = sc.marks[n]
        sc.links.append(Link([(px, ys[top] + 0.4), (m.x, m.y)], cls_of[n], width=1.4,
                             alpha=0.5))


# DGX clusters -----------------------------------------------------------------------------

_Y_NVS, _Y_GPU, _Y_NIC, _Y_TOP, _Y_LEAF, _Y_SPINE = 0.35, 1.0, 1.65, 2.05, 3.5, 5.0


def _dgx(g: _Graph, sc: Scene) -> None:
    levels = _levels(g)
    per_node: dict = defaultdict(lambda: {"gpu": [], "nic": [], "nvs": []})
    for n in g.G:
        if g.kind[n] in ("gpu", "nic"):
            per_node[g.attr(n, "node")][g.kind[n]].append(n)
        elif levels[n] == 0:
            per_node[g.attr(n, "node")]["nvs"].append(n)
    leaves = [s for s in g.switches if levels[s] == 1]
    spines = [s for s in g.switches if levels[s] == 2]
    leaf_set = set(leaves)
    # nodes on the same leaves form a group (a scalable unit of a rail-optimized fabric)
    groups: dict = {}
    for node in sorted(per_node):
        key = frozenset(v for nic in per_node[node]["nic"] for v in g.nbrs[nic] if v in leaf_set)
        groups.setdefault(key, []).append(node)
    group_list = [(_group_leaves(key, per_node[nodes[0]], g), nodes)
                  for key, nodes in groups.items()]
    rail_of = {}
    for leaf in leaves:
        rails = {g.attr(v, "rail") for v in g.nbrs[leaf] if g.kind[v] == "nic"}
        rail_of[leaf] = rails.pop() if len(rails) == 1 else None
    railed = len(leaves) > 1 and all(r is not None for r in rail_of.values())
    rails = sorted({r for r in rail_of.values() if r is not None}, key=str) if railed else []
    sc.rails = len(rails)

    def rail_color(leaf):
        if not railed:
            return None
        return RAIL_COLORS[rails.index(rail_of[leaf]) % len(RAIL_COLORS)]
    gpn = max(len(p["gpu"]) for p in per_node.values())
    summarize = sc.summarized
    cap = ROW_CAP if summarize else None
    x = 0.0
    bundles = []   # (x, leaf, cables): thick lines from a collapsed box to a leaf
    for gi, (glv, nodes) in enumerate(group_list):
        if summarize and gi > 0:
            break
        g0 = x
        for node in nodes[:1] if summarize else nodes:
            x = _dgx_node(g, sc, node, per_node[node], x, summarize) + 0.9
        if summarize and len(nodes) > 1:
            rest = nodes[1:]
            bx0, bx1 = x, x + max(4.0, 0.55 * min(gpn, 16))
            sc.boxes.append(Box(bx0, 0.05, bx1, _Y_TOP, "\n".join([
                f"{len(rest)} more node{'s' * (len(rest) > 1)}", f"like node {nodes[0]}",
                f"(nodes {_range(rest)})", f"{len(rest) * gpn} gpus", "",
                "a thick line:", f"{len(rest)} NICs to", "their leaf"]), "more", "center"))
            for j, leaf in enumerate(glv):
                bundles.append((bx0 + 0.3 + (j + 0.5) * (bx1 - bx0 - 0.6) / len(glv), leaf))
            x = bx1 + 0.9
        g1 = x - 0.9
        shown = glv if cap is None or len(glv) <= cap else glv[:cap - 1]
        for j, leaf in enumerate(shown):   # the group's leaves above it, in rail order
            _mark(sc, leaf, g0 + (j + 0.5) * (g1 - g0) / len(shown), _Y_LEAF, "switch", leaf,
                  "right" if len(shown) <= 12 else "")
        if len(shown) < len(glv):
            _mark(sc, ("more-leaves", gi), g1 + 0.8, _Y_LEAF, "more",
                  f"+{len(glv) - len(shown)} more")
        x += 1.2
    right = x - 1.2
    rest_box = None
    if summarize and len(group_list) > 1:
        rest = group_list[1:]
        rest_nodes = [n for _leaves, ns in rest for n in ns]
        first_leaves, first_nodes = group_list[0]
        rest_box = (right + 1.0, right + 1.0 + max(5.0, 0.5 * min(gpn, 16)))
        sc.boxes.append(Box(rest_box[0], 0.05, rest_box[1], _Y_LEAF + 0.35, "\n".join([
            f"{len(rest)} more group{'s' * (len(rest) > 1)}", f"like nodes {_range(first_nodes)}",
            f"({len(first_nodes)} nodes on their own", f"{len(first_leaves)} leaves)", "",
            f"nodes {_range(rest_nodes)}:", f"{len(rest_nodes)} nodes, {len(rest_nodes) * gpn} "
            "gpus,", f"{sum(len(lv) for lv, _n in rest)} leaves"]), "more", "center"))
        right = rest_box[1]
    shown_sp = spines if cap is None or len(spines) <= cap else spines[:cap - 1]
    for j, s in enumerate(shown_sp):   # spines across the whole width
        _mark(sc, s, (j + 0.5) * right / len(shown_sp), _Y_SPINE, "switch", s,
              "above" if len(shown_sp) <= 16 else "")
    if len(shown_sp) < len(spines):
        _mark(sc, ("more-spines", 0), right + 0.8, _Y_SPINE, "more",
              f"+{len(spines) - len(shown_sp)} more")
    # links: gpus down onto the NVSwitch bar, PCIe up to the NICs, NICs to their rail's
    # leaf in the rail's colour, leaves to spines; the boxes' lines stand for many cables
    nic_cls = "nic"
    for u, v, _a, cls in g.cables:
        if u not in sc.marks or v not in sc.marks:
            continue
        a, b = sc.marks[u], sc.marks[v]
        pts = [(a.x, a.y), (b.x, b.y)]
        in_node = [n for n in (u, v) if g.kind[n] == "switch" and levels[n] == 0]
        leaf = u if u in leaf_set else v if v in leaf_set else None
        if in_node:
            if "nic" in (g.kind[u], g.kind[v]):   # PXN: a peer's NIC over NVLink
                sc.links.append(Link(pts, cls, dashed=True, width=0.6, alpha=0.6))
                continue
            other = b if in_node[0] == u else a
            sc.links.append(Link([(other.x, other.y), (other.x, _Y_NVS + 0.12)], cls,
                                 width=1.0, alpha=0.8))
        elif leaf is not None and "nic" in (g.kind[u], g.kind[v]):
            nic_cls = cls
            sc.links.append(Link(pts, cls, color=rail_color(leaf), width=1.1, alpha=0.85))
        elif leaf is not None:
            sc.links.append(Link(pts, cls, width=0.6, alpha=0.35))
        else:
            sc.links.append(Link(pts, cls, width=1.0, alpha=0.8))
    for px, leaf in bundles:
        if leaf in sc.marks:
            m = sc.marks[leaf]
            sc.links.append(Link([(px, _Y_TOP), (m.x, m.y)], nic_cls, color=rail_color(leaf),
                                 width=2.6, alpha=0.85))
    if rest_box is not None:
        x0, x1 = rest_box
        for j, s in enumerate(shown_sp):
            m = sc.marks[s]
            px = x0 + 0.3 + (j + 0.5) * (x1 - x0 - 0.6) / len(shown_sp)
            sc.links.append(Link([(px, _Y_LEAF + 0.35), (m.x, m.y)], "spine", width=1.2,
                                 alpha=0.45))
    # layer names on the left; speeds and oversubscription on the right
    sc.notes += [Note(-1.0, _Y_SPINE, f"spines ({len(spines)})", ha="right", size=8.5,
                      bold=True),
                 Note(-1.0, _Y_LEAF, f"leaves ({len(leaves)})" + (
                     f"\n{len(rails)} rails" if railed else ""), ha="right", size=8.5,
                      bold=True),
                 Note(-1.0, _Y_GPU, f"DGX nodes\n({len(per_node)} x {gpn} gpus)", ha="right",
                      size=8.5, bold=True)]
    at = right + 1.2
    inside = g.layer_speed(set(g.gpus), set(g.switches) | set(g.nics))
    if inside:
        sc.notes.append(Note(at, _Y_GPU, inside.replace("; ", "\n"), color="#1f3f7f"))
    nic_speed = g.layer_speed(set(g.nics), leaf_set)
    if nic_speed:
        sc.notes.append(Note(at, (_Y_TOP + _Y_LEAF) / 2, nic_speed + (
            "\nNIC i of every node to rail i's leaf" if railed else ""), color="#1f3f7f"))
    spine_speed = g.layer_speed(leaf_set, set(spines))
    if spine_speed:
        sc.notes.append(Note(at, (_Y_LEAF + _Y_SPINE) / 2, spine_speed, color="#1f3f7f"))
    found = g.oversubscription(leaves, set(g.nics), set(spines)) if spines else None
    if found:
        ratio, detail = found
        builder_ratio = g.G.graph.get("oversubscription")
        if isinstance(builder_ratio, (int, float)) and builder_ratio > 0:
            ratio = builder_ratio   # the builder's figure, from its line rates
        sc.notes.append(Note(at, _Y_LEAF, f"leaves: {_ratio_text(ratio)}\n({detail})",
                             color="#7f1f1f"))
    sc.subtitle = f"DGX nodes on a {'rail-optimized ' if railed else ''}leaf-spine fabric"
    if summarize:
        sc.subtitle += (f"; summarized above {sc.threshold} gpus: node "
                        f"{group_list[0][1][0]} drawn in full, the rest in boxes with counts")
    sc.mark_size, sc.label_size = 60.0, 6.5
    sc.size = (min(18.0, max(12.0, 0.33 * right + 7.5)), 8.2)


def _range(nodes: list) -> str:
    if len(nodes) == 1:
        return str(nodes[0])
    if isinstance(nodes[0], int):
        return f"{nodes[0]}-{nodes[-1]}"
    return f"{nodes[0]} to {nodes[-1]}"


def _group_leaves(key, first: dict, g: _Graph) -> list:
    """A group's leaves in rail order (the order of its first node's NICs)."""
    seen = []
    for nic in first["nic"]:
        for v in g.nbrs[nic]:
            if v in key and v not in seen:
                seen.append(v)
    return seen + sorted((leaf for leaf in key if leaf not in seen), key=str)


def _dgx_node(g: _Graph, sc: Scene, node, parts: dict, x: float, summarize: bool) -> float:
    """One node's box from ``x``: the NVSwitch bar at the bottom, gpus, their NICs at the
    top. Returns the box's right edge."""
    gpus = parts["gpu"]
    if summarize and len(gpus) > ROW_CAP:
        gpus = gpus[:8]
    by_rail = {g.attr(nic, "rail"): nic for nic in parts["nic"]}
    x1 = x + len(gpus) + (1.4 if len(gpus) < len(parts["gpu"]) else 0.0)
    for i, gpu in enumerate(gpus):
        gx = x + 0.5 + i
        local = g.attr(gpu, "local", i)
        _mark(sc, gpu, gx, _Y_GPU, "gpu", str(local), "right")
        nic = by_rail.get(local)
        if nic is None or nic in sc.marks:
            nic = next((v for v in g.nbrs[gpu] if g.kind[v] == "nic" and v not in sc.marks),
                       None)
        if nic is not None:
            _mark(sc, nic, gx, _Y_NIC, "nic")
    if len(gpus) < len(parts["gpu"]):
        sc.marks[("more", node)] = Mark(x1 - 0.7, (_Y_GPU + _Y_NIC) / 2, "more",
                                        f"+{len(parts['gpu']) - len(gpus)}")
    for nvs in parts["nvs"]:   # drawn as the bar, not as a mark
        sc.marks[nvs] = Mark((x + x1) / 2, _Y_NVS, "nvswitch", "")
        sc.boxes.append(Box(x + 0.15, _Y_NVS - 0.12, x1 - 0.15, _Y_NVS + 0.12, "NVSwitch",
                            "switch", "center"))
    sc.boxes.append(Box(x, 0.05, x1, _Y_TOP, f"node {node}", "node", "below"))
    return x1


# dragonfly --------------------------------------------------------------------------------

def _dragonfly(g: _Graph, sc: Scene) -> None:
    routers: dict = defaultdict(list)
    for s in g.switches:
        routers[g.attr(s, "group")].append(s)
    order = sorted(routers, key=lambda k: (str(type(k)), k))
    n = len(order)
    per = max(len(r) for r in routers.values())
    hosted: dict = defaultdict(list)
    for gpu in g.gpus:
        hosted[_attached(g, gpu)].append(gpu)
    hpr = max(len(v) for v in hosted.values())
    r_in = 0.45 + 0.1 * per                  # routers on a circle this far from the centre
    r_gpu = r_in + 0.45 + 0.03 * hpr         # their gpus further out
    rr = r_gpu + 0.4                         # the group's circle
    small = 0.6                              # a collapsed group's circle
    gap = math.sin(math.pi / n)
    if sc.summarized:
        R = max(rr + small + 1.5, (2 * small + 0.6) / (2 * gap), (rr + small + 1.0) / (2 * gap))
    else:
        R = max(rr * 1.6, (rr + 0.45) / gap)
    centers = {}
    for i, grp in enumerate(order):
        theta = math.pi / 2 - 2 * math.pi * i / n
        centers[grp] = (R * math.cos(theta), R * math.sin(theta), theta)
    expand = order[:1] if sc.summarized else order
    labels = sum(len(hosted[r]) for grp in expand for r in routers[grp]) <= 64
    for grp in expand:
        cx, cy, theta = centers[grp]
        rts = routers[grp]
        for j, r in enumerate(rts):
            phi = theta + math.pi + (j + 0.5) * 2 * math.pi / len(rts)
            _mark(sc, r, cx + r_in * math.cos(phi), cy + r_in * math.sin(phi), "switch")
            gs = hosted[r]
            for k, gpu in enumerate(gs):
                t = phi + (k - (len(gs) - 1) / 2) * min(0.4, 2.0 / max(len(gs), 1)) * \
                    4 / max(len(rts), 4)
                _mark(sc, gpu, cx + r_gpu * math.cos(t), cy + r_gpu * math.sin(t), "gpu",
                      gpu if labels else "", "out", (cx, cy))
        sc.boxes.append(Box(cx - rr, cy - rr, cx + rr, cy + rr, f"group {grp}", "circle",
                            "below"))
    group_of = {s: g.attr(s, "group") for s in g.switches}

    def crosses(u, v) -> bool:
        gu, gv = group_of.get(u), group_of.get(v)
        return gu is not None and gv is not None and gu != gv
    if sc.summarized:
        for grp in order[1:]:
            cx, cy, _t = centers[grp]
            _mark(sc, ("group", grp), cx, cy, "more", f"group {grp}", "center")
            sc.boxes.append(Box(cx - small, cy - small, cx + small, cy + small, "", "circle",
                                "center"))
        pairs = set()
        for u, v, _a, cls in g.cables:
            if not crosses(u, v):
                continue
            a = u if u in sc.marks else ("group", group_of[u])
            b = v if v in sc.marks else ("group", group_of[v])
            if frozenset((a, b)) not in pairs:
                pairs.add(frozenset((a, b)))
                _link(sc, a, b, cls, width=0.8, alpha=0.45)
        _all_cables(g, sc, {frozenset((u, v)) for u, v, *_ in g.cables if crosses(u, v)},
                    width=1.2, alpha=0.85)
        first = order[0]
        sc.notes.append(Note(0, 0, f"{n - 1} more groups like group {first}\n"
                             f"each {len(routers[first])} routers, "
                             f"{sum(len(hosted[r]) for r in routers[first])} gpus\n"
                             "a line between groups: their global links",
                             ha="center", size=9, color="#555555"))
    else:
        for u, v, _a, cls in g.cables:
            if u in sc.marks and v in sc.marks:
                glob = crosses(u, v)
                _link(sc, u, v, cls, width=1.0 if glob else 1.2, alpha=0.55 if glob else 0.85)
    sc.subtitle = (f"dragonfly: {n} groups of {per} routers, {hpr} gpus a router; routers "
                   "all-to-all inside a group (local), global links between groups")
    if sc.summarized:
        sc.subtitle += f"; summarized above {sc.threshold} gpus: group {order[0]} in full"
    sc.equal, sc.out_gap = True, 0.12
    side = min(14.0, max(8.5, 0.9 * R + 5))
    sc.size = (side + 1.0, side + 1.2)
    _density(sc, len(sc.marks))


# full mesh and anything else --------------------------------------------------------------

def _mesh(g: _Graph, sc: Scene) -> None:
    n = len(g.gpus)
    for i, gpu in enumerate(g.gpus):
        theta = math.pi / 2 - 2 * math.pi * i / n
        _mark(sc, gpu, math.cos(theta), math.sin(theta), "gpu", gpu if n <= 32 else "", "out")
    _all_cables(g, sc, width=0.7, alpha=0.5)
    sc.equal, sc.size = True, (8.0, 8.6)
    _density(sc, n)


def _spring(g: _Graph, sc: Scene) -> None:
    U = g.G.to_undirected(as_view=True)
    try:
        pos = nx.spring_layout(U, seed=1)
    except ImportError:   # a large graph needs scipy for the spring layout
        pos = nx.circular_layout(U)
    small = g.G.number_of_nodes() <= 64
    for n, (x, y) in pos.items():
        _mark(sc, n, float(x), float(y), g.kind[n] or "switch", str(n) if small else "")
    _all_cables(g, sc, width=0.6, alpha=0.4)
    sc.equal, sc.size = True, (10.0, 9.5)
    _density(sc, len(pos))


# -- drawing --------------------------------------------------------------------------------

def _text_inches(text: str, size: float) -> float:
    return max(len(line) for line in text.split("\n")) * size * 0.6 / 72


def render(sc: Scene, fmt: str = "png", dpi: float = 150) -> bytes:
    """The scene drawn by matplotlib, as the bytes of a ``fmt`` file (png, svg, pdf ...)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Circle, FancyBboxPatch, Patch
    except ImportError:
        raise CommsimError("figures need matplotlib: pip install 'commsim[plot]'") from None
    fig = Figure(figsize=sc.size, dpi=dpi)
    FigureCanvasAgg(fig)
    legend_rows = 2 if len(sc.class_text) + len(sc.kind_counts) > 4 else 1
    bottom = (0.35 + 0.22 * legend_rows + 0.15) / sc.size[1]
    ax = fig.add_axes((0.02, bottom, 0.96, 1 - bottom - 0.75 / sc.size[1]))
    ax.axis("off")

    # links, batched by style
    colors: dict = {}
    palette = iter(OTHER_COLORS * 8)

    def color_of(cls: str) -> str:
        if cls not in colors:
            colors[cls] = CLASS_COLORS.get(cls) or next(palette, "#555555")
        return colors[cls]
    batches: dict = defaultdict(list)
    used: list = []
    for link in sc.links:
        color = link.color or color_of(link.cls)
        if link.cls not in used:
            used.append(link.cls)
        batches[(color, link.width, link.dashed, link.alpha)].append(link.points)
    for (color, width, dashed, alpha), segs in batches.items():
        ax.add_collection(LineCollection(segs, colors=color, linewidths=width, alpha=alpha,
                                         linestyles="--" if dashed else "-", zorder=1))
    # boxes
    for box in sc.boxes:
        w, h = box.x1 - box.x0, box.y1 - box.y0
        if box.style == "circle":
            ax.add_patch(Circle(((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2), w / 2,
                                facecolor="#eef3fb" if box.label else "#dde6f3",
                                edgecolor="#7f9cc9", linewidth=1.0, zorder=0))
            if box.label:
                ax.text((box.x0 + box.x1) / 2, box.y0 - 0.08, box.label, ha="center", va="top",
                        fontsize=8.5, color="#333333", zorder=5)
            continue
        face, edge, ls = {"node": ("#f4f8ee", "#5f8f2f", "-"),
                          "group": ("#f5f7fb", "#8fa6c9", "-"),
                          "more": ("#f3f3f3", "#888888", "--"),
                          "switch": ("#1f77b4", "#1f77b4", "-")}.get(box.style,
                                                                       ("#f3f3f3", "#888888", "-"))
        ax.add_patch(FancyBboxPatch((box.x0, box.y0), w, h,
                                    boxstyle="round,pad=0,rounding_size=0.08",
                                    facecolor=face, edgecolor=edge, linestyle=ls,
                                    linewidth=1.1, zorder=0 if box.style != "switch" else 2,
                                    mutation_aspect=1))
        if box.label_at == "center":
            ax.text((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, box.label, ha="center",
                    va="center", fontsize=7.5 if box.style == "switch" else 8.5,
                    color="white" if box.style == "switch" else "#333333", zorder=5,
                    fontweight="bold" if box.style == "switch" else "normal")
        elif box.label_at == "below":
            ax.text(box.x0 + 0.1, box.y0 - 0.06, box.label, ha="left", va="top", fontsize=8,
                    color="#333333", zorder=5)
        else:
            ax.text(box.x0 + 0.1, box.y1 - 0.06, box.label, ha="left", va="top", fontsize=8,
                    color="#333333", zorder=5)
    # marks
    groups: dict = defaultdict(list)
    for m in sc.marks.values():
        if m.kind in KIND_COLORS:
            groups[m.kind].append(m)
    for kind, ms in groups.items():
        ax.scatter([m.x for m in ms], [m.y for m in ms], s=sc.mark_size,
                   c=KIND_COLORS.get(kind, "#777777"), marker=KIND_SHAPES.get(kind, "o"),
                   edgecolors="white", linewidths=0.5, zorder=3)
    offset = 0.1 + 0.012 * math.sqrt(sc.mark_size)
    out_gap = sc.out_gap
    for m in sc.marks.values():
        if not m.label:
            continue
        if m.kind == "more":
            ax.text(m.x, m.y, m.label, ha="center", va="center", fontsize=8, color="#555555",
                    style="italic", zorder=5)
            continue
        dx, dy, ha, va = {"below": (0, -offset, "center", "top"),
                          "above": (0, offset, "center", "bottom"),
                          "right": (offset * 0.7, 0, "left", "center"),
                          "left": (-offset * 0.7, 0, "right", "center")}.get(
                              m.where, (0, 0, "center", "center"))
        if m.where == "out":
            ux, uy = m.x - m.origin[0], m.y - m.origin[1]
            r = math.hypot(ux, uy) or 1.0
            dx, dy = ux / r * out_gap, uy / r * out_gap
            ha = "left" if ux > 0.3 * r else "right" if ux < -0.3 * r else "center"
            va = "bottom" if uy > 0.3 * r else "top" if uy < -0.3 * r else "center"
        box = dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none",
                   alpha=0.75) if m.kind == "switch" else None
        ax.text(m.x + dx, m.y + dy, m.label, ha=ha, va=va, fontsize=sc.label_size,
                color="#222222", zorder=5, bbox=box)
    for note in sc.notes:
        ax.text(note.x, note.y, note.text, ha=note.ha, va="center", fontsize=note.size,
                color=note.color, fontweight="bold" if note.bold else "normal", zorder=5)
    # limits: the content, plus room for the notes beside it
    xs = [m.x for m in sc.marks.values()] + [b.x0 for b in sc.boxes] + [b.x1 for b in sc.boxes]
    ys = [m.y for m in sc.marks.values()] + [b.y0 for b in sc.boxes] + [b.y1 for b in sc.boxes]
    xs += [p[0] for link in sc.links for p in link.points]
    ys += [p[1] for link in sc.links for p in link.points]
    lo, hi = min(xs), max(xs)
    ylo, yhi = min(ys) - 0.5, max(ys) + 0.5
    axes_w = 0.96 * sc.size[0]
    left = max([_text_inches(n.text, n.size) + 0.1 for n in sc.notes
                if n.ha == "right" and n.x <= lo] + [0.3])
    right = max([_text_inches(n.text, n.size) + 0.1 for n in sc.notes
                 if n.ha == "left" and n.x >= hi] + [0.3])
    if sc.equal:
        pad = 0.18 * max(hi - lo, yhi - ylo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(ylo - pad * 0.5, yhi + pad * 0.5)
        ax.set_aspect("equal", adjustable="box")
    else:
        content = (hi - lo) + 2.0
        total = content / max(0.25, 1 - (left + right) / axes_w)
        unit = total / axes_w
        ax.set_xlim(lo - 1.0 - left * unit, hi + 1.0 + right * unit)
        ax.set_ylim(ylo, yhi)
    # legend: link classes (speeds), node kinds (counts), collapsed boxes
    handles = []
    for cls in used:
        text = sc.class_text.get(cls, cls)
        if cls == "nic" and sc.rails:
            text += f" (one colour per rail, {sc.rails} rails)"
        handles.append(Line2D([], [], color=color_of(cls), linewidth=2.0, label=text))
    for kind in ("gpu", "nic", "switch", "host"):
        if sc.kind_counts.get(kind):
            handles.append(Line2D([], [], linestyle="", marker=KIND_SHAPES[kind],
                                  markerfacecolor=KIND_COLORS[kind], markeredgecolor="white",
                                  markersize=8, label=f"{kind} ({sc.kind_counts[kind]})"))
    if any(b.style == "more" for b in sc.boxes):
        handles.append(Patch(facecolor="#f3f3f3", edgecolor="#888888", linestyle="--",
                             label="collapsed: drawn once, counts inside"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)),
                   fontsize=7.5, frameon=False, bbox_to_anchor=(0.5, 0.005))
    fig.suptitle(sc.title, fontsize=12, y=1 - 0.12 / sc.size[1], va="top")
    fig.text(0.5, 1 - 0.42 / sc.size[1], sc.subtitle, ha="center", va="top", fontsize=8.5,
             color="#555555")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()
