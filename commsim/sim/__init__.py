"""The flow-level network simulator: any schedule over any topology.

::

    from commsim import collectives, sim, topology
    G = topology.builders.fat_tree(8)
    r = sim.simulate(collectives.build("allreduce", "ring", 64), G, 256 << 20)
    r.time, r.busbw, r.bottleneck       # seconds, bytes/s, the busiest link
    r.to_chrome_trace("ring.json")

See :func:`simulate` for the model and :class:`SimResult` for what it returns;
:func:`simulate_many` plays several collectives (:class:`Job`) at once.
"""

from commsim.sim.engine import MODES, simulate
from commsim.sim.jobs import Job, ManyResult, simulate_many
from commsim.sim.result import CriticalPath, SimResult

__all__ = ["MODES", "CriticalPath", "Job", "ManyResult", "SimResult", "simulate",
           "simulate_many"]
