"""Capacity planning: ``commsim plan``.

- :mod:`~commsim.plan.models`: model presets and exact parameter counts;
- :mod:`~commsim.plan.gpus`: GPU presets (dense peaks, memory);
- :mod:`~commsim.plan.memory`: memory per GPU (ZeRO state, Korthikanti activations);
- :mod:`~commsim.plan.compute`: FLOPs per step and compute time;
- :mod:`~commsim.plan.from_ddp`: the compute rate a ``commsim ddp`` run measured
  (``--from-ddp``);
- :mod:`~commsim.plan.fabric`: the topology's link classes, growing it, what-ifs;
- :mod:`~commsim.plan.planner`: rows per (scenario, gpus), search, what-if comparisons;
- :mod:`~commsim.plan.view`: tables, JSON rows, the HTML/Markdown report.

Formulas and sources: docs/plan.md.
"""
