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

The sweep's modules, each importing only those above it:

- :mod:`~commsim.plan.study`: the study file, its axes and the grid (:func:`load_study`,
  :func:`parse_study`, :func:`expand`, :func:`scenario_key`);
- :mod:`~commsim.plan.scenario`: checking scenarios before any work and running one
  (:func:`check_scenarios`, :func:`run_scenario`, :func:`make_row`, :func:`row_line`);
- :mod:`~commsim.plan.results`: the results file (:class:`Results`);
- :mod:`~commsim.plan.pool`: where scenarios run (this process, local processes, MPI
  ranks; :func:`default_workers`);
- :mod:`~commsim.plan.sweep_view`: tables, figures and the report.

This module gathers their public names: ``from commsim.plan import sweep`` is the sweep.
"""

from commsim.plan.pool import default_workers
from commsim.plan.results import Results
from commsim.plan.scenario import (
    apply_what_if,
    check_scenarios,
    describe,
    fabric_for,
    format_value,
    graph_for,
    make_row,
    plain,
    row_line,
    run_scenario,
    topology_data,
)
from commsim.plan.study import (
    AXES,
    KINDS,
    Scenario,
    Study,
    expand,
    expand_mapping,
    load_study,
    parse_study,
    scenario_key,
    what_if_label,
)

__all__ = [
    "AXES", "KINDS", "Study", "Scenario", "load_study", "parse_study", "expand_mapping",
    "what_if_label", "scenario_key", "expand",
    "topology_data", "apply_what_if", "fabric_for", "graph_for", "check_scenarios",
    "describe", "format_value", "run_scenario", "plain", "make_row", "row_line",
    "Results", "default_workers",
]
