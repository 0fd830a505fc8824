"""commsim: simulate and benchmark the collective communication of distributed training.

Three answers to one question (how long does this collective take on this network?):
closed-form costs (:mod:`commsim.model`), a flow-level simulation of the collective's
exact message schedule (:mod:`commsim.sim`), and real execution of the same schedule
(:mod:`commsim.backends`, :mod:`commsim.bench`).
"""

__version__ = "0.1.0"
