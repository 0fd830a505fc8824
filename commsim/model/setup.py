"""How the closed forms and the builds are set up for a topology: the flat alpha-beta
view, the ring and tree layout options (channels, node size), the options a build
takes, and the model on the topology (:class:`~commsim.model.on_topology.TopologyModel`)
as one estimate function. The verbs (``simulate``, ``predict``, ``bench``) and the
sweeps (:mod:`commsim.plan.sweep`) share them.
"""

from __future__ import annotations

from commsim import model, topology
from commsim.model.cores import reductions_overlap


def prediction_setting(G, mode: str | None = None) -> tuple[str, bool]:
    """``(mode, overlap)`` that predictions on ``G`` assume: ``mode`` when given, else the
    execution mode a profile measured (``profile.exec``), else ``step``; ``overlap``
    from a profile's ``cores_per_rank`` (:func:`reductions_overlap`), else True (a
    topology that does not say how many cores its ranks have: reductions overlap, as
    on GPUs)."""
    block = (G.graph.get("profile") or {}) if G is not None else {}
    if mode is None:
        mode = block.get("exec") if block.get("exec") in ("step", "dataflow") else "step"
    cores = topology.model_parameter(G, "cores_per_rank")
    return mode, True if cores is None else reductions_overlap(float(cores))


def layout_options(G, nranks: int, algorithm: str, channels="auto",
                   linear: bool = True) -> dict:
    """``channels`` and ``gpus_per_node`` for ``ring`` and ``nccl_tree`` on ``G``: with
    ``auto``, :func:`commsim.collectives.layout.auto_options` (only for the default,
    node-by-node placement: ``linear``); with a number, that many channels and the node
    size when the topology gives one. Other algorithms: ``{}``."""
    from commsim.collectives import layout

    if algorithm not in layout.LAYOUT_ALGORITHMS:
        return {}
    auto = layout.auto_options(G, nranks, algorithm) if linear and G is not None else {}
    if channels == "auto":
        return auto
    return {"channels": int(channels)} | {k: v for k, v in auto.items()
                                          if k in ("gpus_per_node", "pxn")}


def topology_params(G, nranks: int, algorithm: str, group_size: int | None = None,
                    channels="auto", linear: bool = True) -> tuple[float, float, dict]:
    """``(alpha, beta, options)`` the closed form should use for ``algorithm`` on ``G``.

    Flat algorithms see the slowest path from rank 0 (:func:`commsim.model.alpha_beta`).
    A profile's measured executor step cost adds to alpha (:func:`executor_alpha`);
    its ``message_overhead`` is in the options (every piece pays it). This flat view
    is what :func:`topology_model` falls back to; the host contention of a profile is
    in its topology, which the model on the topology reads.
    ``hierarchical`` groups ranks by the topology's ``gpus_per_node`` (or
    ``group_size``): alpha and beta inside a group, ``alpha_inter`` and ``beta_inter``
    across groups. ``ring`` and ``nccl_tree`` get :func:`layout_options`.
    """
    extra = executor_alpha(G)
    per_message = float(topology.model_parameter(G, "message_overhead", 0.0))
    alpha, beta = model.alpha_beta(G, nranks)
    group = group_size or (G.graph.get("params") or {}).get("gpus_per_node")
    hierarchical = algorithm == "hierarchical" and group and not nranks % group \
        and group not in (1, nranks)
    costs = {"message_overhead": per_message} if per_message else {}
    costs |= layout_options(G, nranks, algorithm, channels, linear)
    if not hierarchical:
        # a group size only means something to hierarchical (which has none here: one group)
        keep = {"group_size": group_size} if group_size and algorithm == "hierarchical" else {}
        return alpha + extra, beta, keep | costs
    a_in, b_in = model.alpha_beta(G, group)
    return a_in + extra, b_in, {"group_size": group, "alpha_inter": alpha + extra,
                                "beta_inter": beta} | costs


def executor_alpha(G) -> float:
    """Seconds a profile's executor adds to every step of the flat closed form: the
    larger of its one-way step's and its exchange step's cost (this alpha picks pipeline
    depths, where a step too cheap would cut messages too fine); 0 without a profile."""
    return max(float(topology.model_parameter(G, "step_overhead", 0.0)),
               float(topology.model_parameter(G, "exchange_overhead", 0.0) or 0.0))


MODEL_BUDGET = 4_000_000  # transfers: larger schedules get the flat formula (any scale)
BUILD_OPTIONS = ("group_size", "root", "channels", "gpus_per_node", "pxn")  # of the options


def build_options(options: dict) -> dict:
    """The entries of ``options`` that :func:`commsim.collectives.build` takes (the rest,
    such as ``alpha_inter`` or ``message_overhead``, are the closed form's)."""
    return {k: v for k, v in options.items() if k in BUILD_OPTIONS}


def topology_model(G, nranks: int, router=None):
    """``estimate(collective, algorithm, p, nchunks, options, size, gamma, mode, schedule,
    overlap)``
    on ``G`` with :class:`commsim.model.on_topology.TopologyModel` (a profile's executor
    overheads included; ``router``: reuse the simulator's routes), or None without a
    topology. It prices ``schedule`` when given, else the one those arguments build, and
    returns None for a schedule of more than :data:`MODEL_BUDGET` transfers (the caller
    uses the flat formula)."""
    if G is None:
        return None
    from commsim import collectives
    from commsim.model.on_topology import TopologyModel

    tm = TopologyModel(G, nranks, router=router, **topology.executor_overheads(G))
    built: dict = {}

    def estimate(collective, algorithm, p, nchunks, options, size, gamma, mode="step",
                 schedule=None, overlap=True):
        if schedule is None:
            if 2 * p * max(p, nchunks) > MODEL_BUDGET:
                return None
            keep = build_options(options)
            key = (collective, algorithm, nchunks, tuple(sorted(keep.items())))
            if key not in built:
                built[key] = collectives.build(collective, algorithm, p, nchunks, **keep)
            schedule = built[key]
        elif len(schedule) > MODEL_BUDGET:
            return None
        return tm.estimate(schedule, size, gamma, mode, overlap)

    return estimate
