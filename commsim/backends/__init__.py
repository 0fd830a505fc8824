"""Executors: run a :class:`~commsim.collectives.Schedule` on real buffers.

``reference`` (numpy, in one process) is the oracle for every test; ``torch_dist`` and
``mpi`` run the same schedule across processes. Only those two import torch or mpi4py,
and only when used.
"""
