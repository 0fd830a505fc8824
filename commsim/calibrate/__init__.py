"""Calibration: measure this machine on real ranks, fit the alpha-beta-gamma model, write a
network profile.

- :mod:`commsim.calibrate.fit`: robust (Huber IRLS) least squares in relative terms, and the
  alpha-beta, gamma, executor-overhead and contention fits built on it.
"""
