"""Routes between ranks: shortest paths by latency, ECMP over the equal-cost ones.

A route is a path of directed links (edge ids: positions in ``list(G.edges)``) from a
rank's gpu to another rank's gpu that never transits a gpu. Routes are the shortest by
total latency (seconds), ties broken by fewer hops; all paths equal in both are the
equal-cost set. Under ``ecmp`` each transfer picks one of them by hashing its source
and destination gpus and its connection (``Schedule.connection``: a channel of a ring
or tree; one connection a pair otherwise) and, along the path, one next hop per switch,
like a real switch hashing a flow's header. The gpus, not the ranks: a switch hashes
addresses, so a pair of gpus takes the same paths in whichever collective. The
connection, not the message: a queue pair or TCP stream keeps its header, so all its
messages take one path, and two connections that hash onto one link share it for the
whole collective (ECMP's collisions). The choice is deterministic: runs repeat exactly.
At most ``width`` distinct routes are kept per pair of ranks (the flow hash modulo
``width`` picks one). ``static`` routing gives every pair one fixed path.

Everything is vectorized for schedules with hundreds of millions of transfers: a
transfer costs a hash and a table lookup; the graph work is done once per distinct
pair (and ECMP choice), in numpy:

- single-source shortest latencies (and hop counts) are computed from each switch/nic
  that a gpu attaches to, over the non-gpu part of the network, all sources at once;
- a pair's route is then walked back from the destination's attachment to the
  source's, choosing among the equal-cost predecessors by hash.

Memory is one row of distances per attachment node (a float64 and an int32 per
non-gpu node), so the fat-tree with 16384 gpus needs ~20 MB.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import networkx as nx
import numpy as np

from commsim.errors import CommsimError

ROUTINGS = ("ecmp", "static")
_PARTNERS = 4  # pairs per source rank found without hashing
_RTOL = 1e-12  # latencies that differ by less than this (relative) are equal cost


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-spread uint64 hash of each entry of ``x``."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def flow_hash(*columns) -> np.ndarray:
    """A uint64 hash of a row of integer columns (each column an array or scalar)."""
    out = None
    for i, col in enumerate(columns):
        h = np.uint64((0x9E3779B97F4A7C15 + i * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
        c = np.asarray(col).astype(np.uint64)
        with np.errstate(over="ignore"):
            out = mix64(c + h) if out is None else mix64(out ^ (c + h))
    return out


def transfer_variant(src, dst, connection, width: int) -> np.ndarray:
    """Which of ``width`` ECMP choices a transfer takes: a hash of its source and
    destination gpus (node numbers) and its connection."""
    with np.errstate(over="ignore"):
        x = (np.asarray(src).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.asarray(dst).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             + np.asarray(connection).astype(np.uint64) * np.uint64(0x165667B19E3779F9))
    return (mix64(x) % np.uint64(width)).astype(np.int64)


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a loop."""
    if len(counts) <= 4:                       # most events bring one or two runs
        return np.array([x for a, c in zip(np.asarray(starts).tolist(),
                                           np.asarray(counts).tolist())
                         for x in range(a, a + c)], dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    out = np.ones(total, dtype=np.int64)
    nz = counts > 0
    first = (ends - counts)[nz]
    starts = np.asarray(starts, dtype=np.int64)[nz]
    # each run starts at its own offset: a jump of start - (previous end) at its first slot
    prev_last = np.concatenate(([0], (starts + counts[nz] - 1)[:-1]))
    out[first] = starts - prev_last
    out[0] = starts[0]
    return np.cumsum(out)


def _distinct(values: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The distinct entries of ``values`` (indices into the all-False ``scratch``), sorted."""
    scratch[values] = True
    out = np.flatnonzero(scratch) if len(values) * 8 > len(scratch) else np.unique(values)
    scratch[out] = False
    return out


class IntMap:
    """A vectorized open-addressing hash map from int64 keys (>= 0) to int64 values."""

    def __init__(self, capacity: int = 1024) -> None:
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._keys = np.full(cap, -1, dtype=np.int64)
        self._vals = np.zeros(cap, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return (mix64(keys) & np.uint64(len(self._keys) - 1)).astype(np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, or -1 where the key is absent."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(len(keys), -1, dtype=np.int64)
        slot = self._slots(keys)
        todo = np.arange(len(keys))
        mask = len(self._keys) - 1
        while len(todo):
            k = self._keys[slot]
            hit = k == keys[todo]
            out[todo[hit]] = self._vals[slot[hit]]
            more = ~hit & (k != -1)
            todo, slot = todo[more], (slot[more] + 1) & mask
        return out

    def put(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Insert distinct keys that are not in the map yet."""
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)
        if 2 * (self._n + len(keys)) > len(self._keys):
            old = self._keys != -1
            ok, ov = self._keys[old], self._vals[old]
            self.__init__(4 * (self._n + len(keys)))
            self._insert(ok, ov)
        self._insert(keys, values)

    def _insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        mask = len(self._keys) - 1
        slot = self._slots(keys)
        todo = np.arange(len(keys))
        while len(todo):
            free = self._keys[slot] == -1
            # among keys that reach the same free slot, the first claims it
            cand = np.flatnonzero(free)
            _, first = np.unique(slot[cand], return_index=True)
            win = cand[first]
            self._keys[slot[win]] = keys[todo[win]]
            self._vals[slot[win]] = values[todo[win]]
            lose = np.ones(len(todo), dtype=bool)
            lose[win] = False
            todo, slot = todo[lose], (slot[lose] + 1) & mask
        self._n += len(keys)


class _Distances:
    """Shortest latencies (s) and hop counts from core nodes over a topology's non-gpu
    network, one row per source met so far (``row_of[core node]``, -1 for none yet).

    They depend only on the network, so every :class:`Router` of one graph shares them
    (:func:`_distances`): a training step simulates each phase with its own router, on
    its own placement, and a 4096-gpu cluster's rows take seconds to compute."""

    def __init__(self, ncore: int, key: tuple) -> None:
        self.key = key
        self.row_of = np.full(ncore, -1, dtype=np.int64)
        self.D = np.zeros((0, ncore))
        self.H = np.zeros((0, ncore), dtype=np.int32)
        self.n = 0          # rows in use (D and H keep spare rows to grow into)

    def matches(self, key: tuple) -> bool:
        return len(key) == len(self.key) and all(
            np.array_equal(a, b) for a, b in zip(key, self.key))

    def add(self, need: np.ndarray, D: np.ndarray, H: np.ndarray) -> None:
        """Rows ``D``, ``H`` for the core nodes ``need``."""
        n, k = self.n, len(need)
        if n + k > len(self.D):
            cap = max(n + k, n + n // 4)
            self.D = np.concatenate((self.D[:n], np.zeros((cap - n, self.D.shape[1]))))
            self.H = np.concatenate((self.H[:n], np.zeros((cap - n, self.H.shape[1]),
                                                          dtype=np.int32)))
        self.D[n:n + k] = D
        self.H[n:n + k] = H
        self.row_of[need] = n + np.arange(k)
        self.n = n + k


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _distances(G, ncore: int, key: tuple) -> _Distances:
    """The distance rows shared by the routers of ``G``, while its non-gpu network (its
    nodes' kinds, links and latencies: ``key``) stays what it was; else new ones."""
    try:
        dist = _SHARED.get(G)
    except TypeError:                     # a graph that cannot be weakly referenced
        return _Distances(ncore, key)
    if dist is None or not dist.matches(key):
        dist = _Distances(ncore, key)
        _SHARED[G] = dist
    return dist


class Router:
    """Routes of a topology between the gpus that ranks are placed on.

    ``placement[r]`` is rank ``r``'s gpu node. ``routing`` is ``"ecmp"`` (each transfer
    hashes to one of its pair's equal-cost paths) or ``"static"`` (one path per pair).
    After construction, ``links`` lists the directed edges (index = link id) with
    ``link_bandwidth`` (bytes/s) and ``link_latency`` (s); routes found so far are
    ``route_edges[route_ptr[i]:route_ptr[i+1]]`` with ``route_latency`` (s, the sum
    along the path) and ``route_bandwidth`` (bytes/s, its narrowest link).
    """

    def __init__(self, G: nx.DiGraph, placement: Sequence, routing: str = "ecmp",
                 width: int = 16) -> None:
        if routing not in ROUTINGS:
            raise CommsimError(f"routing: {routing!r} is not one of {', '.join(ROUTINGS)}")
        self.G = G
        self.routing = routing
        self.width = int(width) if routing == "ecmp" else 1
        self.placement = list(placement)
        self.nranks = len(self.placement)
        nodes = list(G.nodes)
        self._node_index = {n: i for i, n in enumerate(nodes)}
        self.nodes = nodes
        is_gpu = np.array([G.nodes[n].get("kind") == "gpu" for n in nodes], dtype=bool)
        self.links = list(G.edges)
        m = len(self.links)
        esrc = np.fromiter((self._node_index[u] for u, _ in self.links), np.int64, m)
        edst = np.fromiter((self._node_index[v] for _, v in self.links), np.int64, m)
        self.link_bandwidth = np.fromiter(
            (float(d["bandwidth"]) for _, _, d in G.edges(data=True)), np.float64, m)
        self.link_latency = np.fromiter(
            (float(d["latency"]) for _, _, d in G.edges(data=True)), np.float64, m)
        self._rank_node = np.array([self._node_of(g) for g in self.placement], dtype=np.int64)
        self._nnodes = len(nodes)
        self._build_core(is_gpu, esrc, edst)
        self._build_attachments(is_gpu, esrc, edst)
        # routes (CSR, grown as pairs are met)
        self.route_ptr = np.zeros(1, dtype=np.int64)
        self.route_edges = np.zeros(0, dtype=np.int64)
        self.route_latency = np.zeros(0)
        self.route_bandwidth = np.zeros(0)
        self.route_fabric_ptr = np.zeros(1, dtype=np.int64)
        self.route_fabric_edges = np.zeros(0, dtype=np.int64)
        self.route_has_fabric = np.zeros(0, dtype=bool)
        # pairs of ranks
        self._pairs = IntMap()
        self._pair_src = np.zeros(0, dtype=np.int64)
        self._pair_dst = np.zeros(0, dtype=np.int64)
        self._pair_nvar = np.zeros(0, dtype=np.int64)
        self._pair_ties = np.zeros((0, 1), dtype=np.int64)
        self._pair_nties = np.zeros(0, dtype=np.int64)
        self._route_of = np.zeros(0, dtype=np.int64)
        # the first few partners of each rank, checked before the hash map
        self._partner = np.full((self.nranks, _PARTNERS), -1, dtype=np.int64)
        self._partner_pid = np.full((self.nranks, _PARTNERS), -1, dtype=np.int64)
        # each rank's first partner and, if that pair has a single route, the route
        self._p0 = self._partner[:, 0].copy()
        self._p0_rid = np.full(self.nranks, -1, dtype=np.int64)
        self._p0_fast = self._p0.copy()      # the partner, where its route is known and single

    # --- setup ----------------------------------------------------------------------

    def _node_of(self, g) -> int:
        if g not in self._node_index:
            raise CommsimError(f"placement: {g!r} is not a node of topology "
                               f"{self.G.graph.get('name', '')!r}")
        if self.G.nodes[g].get("kind") != "gpu":
            raise CommsimError(f"placement: {g!r} is a {self.G.nodes[g].get('kind')}, "
                               "not a gpu; place ranks on gpu nodes")
        return self._node_index[g]

    def _build_core(self, is_gpu, esrc, edst) -> None:
        """The non-gpu part of the network, as CSR by source and padded by target."""
        core_nodes = np.flatnonzero(~is_gpu)
        self._core_of = np.full(len(is_gpu), -1, dtype=np.int64)
        self._core_of[core_nodes] = np.arange(len(core_nodes))
        self.ncore = len(core_nodes)
        ce = np.flatnonzero(~is_gpu[esrc] & ~is_gpu[edst])
        cu, cw = self._core_of[esrc[ce]], self._core_of[edst[ce]]
        order = np.argsort(cu, kind="stable")
        self._out_edge = ce[order]
        self._out_tgt = cw[order]
        self._out_lat = self.link_latency[self._out_edge]
        self._out_ptr = np.concatenate(([0], np.cumsum(np.bincount(cu, minlength=self.ncore))))
        indeg = np.bincount(cw, minlength=self.ncore)
        din = int(indeg.max()) if len(indeg) else 0
        self._in_node = np.full((self.ncore, max(din, 1)), -1, dtype=np.int64)
        self._in_edge = np.full((self.ncore, max(din, 1)), -1, dtype=np.int64)
        order = np.argsort(cw, kind="stable")
        tw = cw[order]
        first = np.concatenate(([0], np.cumsum(indeg)))[:-1]
        col = np.arange(len(tw)) - first[tw]
        self._in_node[tw, col] = cu[order]
        self._in_edge[tw, col] = ce[order]
        self._dist = _distances(self.G, self.ncore, (is_gpu, esrc, edst, self.link_latency))

    def _build_attachments(self, is_gpu, esrc, edst) -> None:
        """Each gpu's links to and from the non-gpu network, padded; and gpu-gpu links."""
        n = len(is_gpu)
        out_e = np.flatnonzero(is_gpu[esrc] & ~is_gpu[edst])
        in_e = np.flatnonzero(~is_gpu[esrc] & is_gpu[edst])

        def pad(nodes_of_edges, edges):
            order = np.argsort(nodes_of_edges, kind="stable")
            owner = nodes_of_edges[order]
            cnt = np.bincount(owner, minlength=n)
            width = max(int(cnt.max()) if len(cnt) else 0, 1)
            table = np.full((n, width), -1, dtype=np.int64)
            col = np.arange(len(owner)) - np.concatenate(([0], np.cumsum(cnt)))[:-1][owner]
            table[owner, col] = edges[order]
            return table

        self._is_fabric = ~is_gpu[esrc] & ~is_gpu[edst]
        self._att_out = pad(esrc[out_e], out_e)
        self._att_in = pad(edst[in_e], in_e)
        gg = np.flatnonzero(is_gpu[esrc] & is_gpu[edst])
        self._direct = {(int(esrc[e]), int(edst[e])): int(e) for e in gg}
        self._esrc, self._edst = esrc, edst

    # --- shortest paths over the non-gpu network ------------------------------------

    @property
    def _row_of(self) -> np.ndarray:
        return self._dist.row_of

    @property
    def _D(self) -> np.ndarray:
        return self._dist.D

    @property
    def _H(self) -> np.ndarray:
        return self._dist.H

    def _ensure_rows(self, core_sources: np.ndarray) -> None:
        """Distances (s) and hop counts from each core node in ``core_sources``."""
        need = np.unique(core_sources[self._row_of[core_sources] < 0])
        if not len(need):
            return
        D, H = zip(*(self._sssp(need[lo:lo + 256]) for lo in range(0, len(need), 256)))
        self._dist.add(need, np.vstack(D), np.vstack(H))

    def _sssp(self, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latency distances then min hop counts on the latency-tight subgraph, per source."""
        B, M = len(sources), self.ncore
        seen = np.zeros(B * M, dtype=bool)
        D = np.full(B * M, np.inf)
        start = np.arange(B) * M + sources
        D[start] = 0.0
        front = start
        while len(front):
            rows, nodes = np.divmod(front, M)
            cnt = self._out_ptr[nodes + 1] - self._out_ptr[nodes]
            e = expand_ranges(self._out_ptr[nodes], cnt)
            rows_e = np.repeat(rows, cnt)
            cand = np.repeat(D[front], cnt) + self._out_lat[e]
            flat = rows_e * M + self._out_tgt[e]
            better = cand * (1 + _RTOL) + 1e-300 < D[flat]
            flat, cand = flat[better], cand[better]
            np.minimum.at(D, flat, cand)
            front = _distinct(flat, seen)
        H = np.full(B * M, -1, dtype=np.int32)
        H[start] = 0
        front, hop = start, 0
        while len(front):
            hop += 1
            rows, nodes = np.divmod(front, M)
            cnt = self._out_ptr[nodes + 1] - self._out_ptr[nodes]
            e = expand_ranges(self._out_ptr[nodes], cnt)
            src_d = np.repeat(D[front], cnt)
            flat = np.repeat(rows, cnt) * M + self._out_tgt[e]
            tight = (H[flat] < 0) & (src_d + self._out_lat[e] <= D[flat] * (1 + _RTOL) + 1e-300)
            front = _distinct(flat[tight], seen)
            H[front] = hop
        return D.reshape(B, M), H.reshape(B, M)

    # --- pairs ----------------------------------------------------------------------

    def _add_pairs(self, keys: np.ndarray) -> None:
        """Cost the new rank pairs ``keys = src * nranks + dst`` and route choice 0 of each."""
        src, dst = np.divmod(keys, self.nranks)
        s_node, t_node = self._rank_node[src], self._rank_node[dst]
        outs = self._att_out[s_node]                      # (P, Ao) edge ids
        ins = self._att_in[t_node]                        # (P, Ai)
        a_core = np.where(outs >= 0, self._core_of[self._edst[np.maximum(outs, 0)]], -1)
        b_core = np.where(ins >= 0, self._core_of[self._esrc[np.maximum(ins, 0)]], -1)
        self._ensure_rows(a_core[a_core >= 0])
        P, Ao, Ai = len(keys), outs.shape[1], ins.shape[1]
        cost = np.full((P, Ao * Ai + 1), np.inf)
        hops = np.full((P, Ao * Ai + 1), np.iinfo(np.int32).max, dtype=np.int64)
        for i in range(Ao if self._dist.n else 0):
            for j in range(Ai):
                ok = (outs[:, i] >= 0) & (ins[:, j] >= 0)
                row = self._row_of[np.maximum(a_core[:, i], 0)]
                bj = np.maximum(b_core[:, j], 0)
                h = np.where(ok, self._H[row, bj], -1)
                ok &= h >= 0
                c = ((self.link_latency[outs[:, i]] + self._D[row, bj])
                     + self.link_latency[ins[:, j]])
                cost[ok, i * Ai + j] = c[ok]
                hops[ok, i * Ai + j] = h[ok] + 2
        if self._direct:
            for p_, (u, v) in enumerate(zip(s_node.tolist(), t_node.tolist())):
                e = self._direct.get((u, v))
                if e is not None:
                    cost[p_, -1] = self.link_latency[e]
                    hops[p_, -1] = 1
        best = cost.min(axis=1)
        bad = ~np.isfinite(best)
        if bad.any():
            k = int(np.argmax(bad))
            raise CommsimError(
                f"topology: gpu {self.placement[int(src[k])]!r} (rank {int(src[k])}) cannot "
                f"reach gpu {self.placement[int(dst[k])]!r} (rank {int(dst[k])}) without "
                "passing through another gpu; connect them through a switch")
        near = cost <= best[:, None] * (1 + _RTOL) + 1e-300
        minhop = np.where(near, hops, np.iinfo(np.int64).max).min(axis=1)
        ties = near & (hops == minhop[:, None])
        base = len(self._pair_src)
        self._pairs.put(keys, base + np.arange(P))
        self._pair_src = np.concatenate((self._pair_src, src))
        self._pair_dst = np.concatenate((self._pair_dst, dst))
        ncomb = ties.shape[1]
        if self._pair_ties.shape[1] != ncomb:
            self._pair_ties = np.zeros((base, ncomb), dtype=np.int64)
        order = np.argsort(~ties, axis=1, kind="stable")   # tied combos first
        self._pair_ties = np.vstack((self._pair_ties, order))
        nties = ties.sum(axis=1)
        self._pair_nties = np.concatenate((self._pair_nties, nties))
        self._pair_nvar = np.concatenate((self._pair_nvar, np.ones(P, dtype=np.int64)))
        self._route_of = np.concatenate((self._route_of, np.full(P * self.width, -1, np.int64)))
        pids = base + np.arange(P)
        self._remember_partners(src, dst, pids)
        multi = self._walk(pids, np.zeros(P, dtype=np.int64)) | (nties > 1)
        if self.width > 1:
            self._pair_nvar[pids[multi]] = self.width
        self._p0 = self._partner[:, 0].copy()
        first = self._partner_pid[:, 0]
        has = first >= 0
        single = np.zeros(self.nranks, dtype=bool)
        single[has] = self._pair_nvar[first[has]] == 1
        self._p0_rid = np.where(single, self._route_of[np.maximum(first, 0) * self.width], -1)
        self._p0_fast = np.where(self._p0_rid >= 0, self._p0, -1)

    def _remember_partners(self, src, dst, pids) -> None:
        todo = np.arange(len(src))
        for j in range(_PARTNERS):
            free = todo[self._partner[src[todo], j] < 0]
            _, first = np.unique(src[free], return_index=True)
            take = free[first]
            self._partner[src[take], j] = dst[take]
            self._partner_pid[src[take], j] = pids[take]
            keep = np.ones(len(src), dtype=bool)
            keep[take] = False
            todo = todo[keep[todo]]
            if not len(todo):
                break

    def _walk(self, pids: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Build route ``variants[i]`` of pair ``pids[i]``; True where a hop had a choice."""
        n = len(pids)
        Ai = self._att_in.shape[1]
        # ECMP hashes what a switch sees, the endpoints' addresses (their gpus), not rank
        # numbers: the same pair of gpus takes the same paths in any collective
        pkey = (self._rank_node[self._pair_src[pids]] * self._nnodes
                + self._rank_node[self._pair_dst[pids]])
        h0 = flow_hash(pkey, variants, 0)
        pick = (h0 % self._pair_nties[pids].astype(np.uint64)).astype(np.int64)
        combo = self._pair_ties[pids, pick]
        s_node = self._rank_node[self._pair_src[pids]]
        t_node = self._rank_node[self._pair_dst[pids]]
        direct = combo == self._pair_ties.shape[1] - 1
        multi = np.zeros(n, dtype=bool)
        nd = np.flatnonzero(~direct)
        e1 = np.full(n, -1, dtype=np.int64)
        e2 = np.full(n, -1, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        e1[nd] = self._att_out[s_node[nd], combo[nd] // Ai]
        e2[nd] = self._att_in[t_node[nd], combo[nd] % Ai]
        row = self._row_of[self._core_of[self._edst[e1[nd]]]]
        cur = self._core_of[self._esrc[e2[nd]]]
        length[nd] = self._H[row, cur]
        width = int(length.max()) if n else 0
        mid = np.full((n, max(width, 1)), -1, dtype=np.int64)
        for hop in range(width):
            act = np.flatnonzero(self._H[row, cur] > 0)
            if not len(act):
                break
            c, r = cur[act], row[act]
            preds, pe = self._in_node[c], self._in_edge[c]
            pc = np.maximum(preds, 0)
            hc = self._H[r, c]
            ok = ((preds >= 0) & (self._H[r[:, None], pc] == hc[:, None] - 1)
                  & (self._D[r[:, None], pc] + self.link_latency[np.maximum(pe, 0)]
                     <= self._D[r, c][:, None] * (1 + _RTOL) + 1e-300))
            cnt = ok.sum(axis=1)
            who = nd[act]
            multi[who] |= cnt > 1
            k = (flow_hash(pkey[who], variants[who], hop + 1)
                 % np.maximum(cnt, 1).astype(np.uint64)).astype(np.int64)
            choose = np.argmax(np.cumsum(ok, axis=1) > k[:, None], axis=1)
            mid[who, hc - 1] = pe[np.arange(len(act)), choose]
            cur[act] = preds[np.arange(len(act)), choose]
        # assemble: e1, mid[:length], e2  (or the direct link)
        full = np.full((n, width + 2), -1, dtype=np.int64)
        full[:, 0] = e1
        full[:, 1:width + 1] = mid[:, :width]
        full[np.arange(n), length + 1] = e2
        for i in np.flatnonzero(direct).tolist():
            full[i, 0] = self._direct[(int(s_node[i]), int(t_node[i]))]
        valid = full >= 0
        lat = np.zeros(n)
        for j in range(full.shape[1]):  # left to right, the order a path's latency is summed
            lat = lat + np.where(valid[:, j], self.link_latency[np.maximum(full[:, j], 0)], 0.0)
        cap = np.where(valid, self.link_bandwidth[np.maximum(full, 0)], np.inf).min(axis=1)
        first = self.nroutes
        self.route_edges = np.concatenate((self.route_edges, full[valid]))
        self.route_ptr = np.concatenate((self.route_ptr,
                                         self.route_ptr[-1] + np.cumsum(valid.sum(axis=1))))
        self.route_latency = np.concatenate((self.route_latency, lat))
        self.route_bandwidth = np.concatenate((self.route_bandwidth, cap))
        fab = valid & self._is_fabric[np.maximum(full, 0)]
        self.route_fabric_edges = np.concatenate((self.route_fabric_edges, full[fab]))
        self.route_fabric_ptr = np.concatenate(
            (self.route_fabric_ptr, self.route_fabric_ptr[-1] + np.cumsum(fab.sum(axis=1))))
        self.route_has_fabric = np.diff(self.route_fabric_ptr) > 0
        self._route_of[pids * self.width + variants] = first + np.arange(n)
        return multi

    # --- public ---------------------------------------------------------------------

    @property
    def nroutes(self) -> int:
        return len(self.route_latency)

    def pair_ids(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The pair index of each ``(src, dst)`` rank pair, costing pairs met for the first time."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        hit = self._partner[src, 0] == dst
        pid = np.where(hit, self._partner_pid[src, 0], -1)
        if hit.all():
            return pid
        todo = np.flatnonzero(~hit)
        for j in range(1, _PARTNERS):
            found = self._partner[src[todo], j] == dst[todo]
            pid[todo[found]] = self._partner_pid[src[todo[found]], j]
            todo = todo[~found]
            if not len(todo):
                return pid
        keys = src[todo] * self.nranks + dst[todo]
        got = self._pairs.get(keys)
        miss = got < 0
        if miss.any():
            self._add_pairs(np.unique(keys[miss]))
            got[miss] = self._pairs.get(keys[miss])
        pid[todo] = got
        return pid

    def route_ids(self, src, dst, connection=0) -> np.ndarray:
        """The route of each transfer ``src -> dst`` (ranks) on ``connection``
        (``Schedule.transfer_connections``; a scalar or one per transfer)."""
        src, dst = np.atleast_1d(src), np.atleast_1d(dst)
        rid = self._p0_rid[src]
        slow = np.flatnonzero(self._p0_fast[src] != dst)
        if len(slow) == 0:
            return rid
        connection = np.broadcast_to(np.asarray(connection), src.shape)[slow]
        rid[slow] = self._route_ids(src[slow], dst[slow], connection)
        return rid

    def _route_ids(self, src, dst, connection) -> np.ndarray:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if len(src) and (int(src.min()) < 0 or int(max(src.max(), dst.max())) >= self.nranks):
            raise CommsimError(f"route: rank out of range for {self.nranks} ranks")
        if np.any(src == dst):
            raise CommsimError("route: a transfer from a rank to itself has no route")
        pid = self.pair_ids(src, dst)
        slot = pid * self.width
        if self.width > 1:
            nvar = self._pair_nvar[pid]
            many = np.flatnonzero(nvar > 1)
            if len(many):
                conn = np.broadcast_to(np.asarray(connection), src.shape)[many]
                slot[many] += transfer_variant(self._rank_node[src[many]],
                                               self._rank_node[dst[many]], conn, self.width)
        rid = self._route_of[slot]
        miss = rid < 0
        if miss.any():
            todo = np.unique(slot[miss])
            self._walk(todo // self.width, todo % self.width)
            rid[miss] = self._route_of[slot[miss]]
        return rid

    def route_links(self, route_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The link ids of the given routes, concatenated, and each route's link count."""
        route_ids = np.asarray(route_ids, dtype=np.int64)
        starts = self.route_ptr[route_ids]
        counts = self.route_ptr[route_ids + 1] - starts
        return self.route_edges[expand_ranges(starts, counts)], counts

    def route_fabric_links(self, route_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`route_links`, only the links between two non-gpu nodes."""
        starts = self.route_fabric_ptr[route_ids]
        counts = self.route_fabric_ptr[route_ids + 1] - starts
        return self.route_fabric_edges[expand_ranges(starts, counts)], counts

    def path(self, src: int, dst: int, connection: int = 0) -> list[tuple]:
        """The route of one transfer on ``connection`` as a list of ``(u, v)`` links."""
        rid = int(self.route_ids(np.array([src]), np.array([dst]), connection)[0])
        edges = self.route_edges[self.route_ptr[rid]:self.route_ptr[rid + 1]]
        return [self.links[e] for e in edges.tolist()]

    def equal_cost_routes(self, src: int, dst: int) -> list[list[tuple]]:
        """Every distinct route ECMP may give ``src -> dst`` (at most ``width``)."""
        pid = int(self.pair_ids(np.array([src]), np.array([dst]))[0])
        nvar = int(self._pair_nvar[pid])
        slots = pid * self.width + np.arange(nvar)
        miss = slots[self._route_of[slots] < 0]
        if len(miss):
            self._walk(miss // self.width, miss % self.width)
        seen = []
        for rid in self._route_of[slots].tolist():
            p = [self.links[e] for e in self.route_edges[self.route_ptr[rid]:
                                                          self.route_ptr[rid + 1]].tolist()]
            if p not in seen:
                seen.append(p)
        return seen
