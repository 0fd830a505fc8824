"""Training workloads: parallel layouts on a topology and one step's communication.

::

    from commsim import topology, workload
    G = topology.load("dgx-h100-32node")
    layout, shape = workload.load_workload("gpt3-175b-tp8-pp8")   # or a YAML path / dict
    placement = workload.place_layout(G, layout)         # global rank -> gpu
    layout.groups("tp")[:2]                              # [[0, ..., 7], [8, ..., 15]]
    ops = workload.step_ops(shape, layout)               # the step's collectives per GPU
    workload.traffic_per_gpu(ops)                        # {dim: bytes sent per step}
    phases = workload.step_timeline(shape, layout)       # ops that run at the same time

- :mod:`~commsim.workload.layout`: :class:`Layout` (rank order, groups), placement and
  the classes of link a group's traffic crosses;
- :mod:`~commsim.workload.step`: :class:`Shape`, :class:`Op`, :class:`Phase`, the step's
  volumes (docs/workload.md derives them) and its timeline;
- :mod:`~commsim.workload.spec`: workload YAML files;
- :mod:`~commsim.workload.simulate`: a timeline's phases as concurrent simulator jobs.
"""

from commsim.workload.layout import DIMS, Layout, group_links, link_class, place_layout
from commsim.workload.simulate import (
    DEFAULT_ALGORITHMS,
    PhaseResult,
    StepResult,
    jobs_for_phase,
    run_step,
)
from commsim.workload.spec import (
    WorkloadSpec,
    find_workload,
    load_workload,
    read_workload,
    resolve_layout,
    workload_names,
)
from commsim.workload.step import (
    STRATEGIES,
    Op,
    Phase,
    Shape,
    send_factor,
    step_ops,
    step_timeline,
    traffic_per_gpu,
)

__all__ = ["DEFAULT_ALGORITHMS", "DIMS", "STRATEGIES", "Layout", "Op", "Phase", "PhaseResult",
           "Shape", "StepResult", "WorkloadSpec", "find_workload", "group_links",
           "jobs_for_phase", "link_class", "load_workload", "place_layout", "read_workload",
           "resolve_layout", "run_step", "send_factor", "step_ops", "step_timeline",
           "traffic_per_gpu", "workload_names"]
