"""Has this machine changed since it was calibrated? One ring shift, timed again.

A profile's predictions hold for the machine as it was measured. A shared host's
throughput moves with its neighbours' load (on the 2-core development machine, the same
ring shift took 1.6 to 4 times as long from one quarter hour to the next), and then every
prediction made from the profile is off by about as much. ``bench --profile`` times the
profile's own ring shift again before it measures, at the size nearest
:data:`SIZE` that the profile holds, and reports the ratio: in the config line
(``prediction.drift``), and as a note when it is beyond :data:`NOTED`.
"""

from __future__ import annotations

SIZE = 2 << 20   # bytes: a bandwidth-bound size that calibrate times and a sweep affords
NOTED = 0.2      # a ratio beyond 1 +- this is noted in the header


def reference(G) -> tuple[int, float] | None:
    """``(bytes, seconds)``: the profile's ring shift at the size nearest :data:`SIZE`,
    or None when ``G`` is no profile (or holds no ring shift)."""
    profile = G.graph.get("profile") if G is not None else None
    measured = profile.get("measurements") if isinstance(profile, dict) else None
    ring = measured.get("ring") if isinstance(measured, dict) else None
    if not isinstance(ring, dict):
        return None
    sizes, seconds = ring.get("bytes"), ring.get("seconds")
    try:   # a profile edited by hand may hold anything here: then there is no reference
        pairs = [(int(b), float(t)) for b, t in zip(sizes, seconds)
                 if float(b) > 0 and 0 < float(t) < float("inf")]
    except (TypeError, ValueError, OverflowError):
        return None
    if not pairs:
        return None
    return min(pairs, key=lambda bt: abs(bt[0] - SIZE))


def measure(comm, G) -> dict | None:
    """Time the profile's ring shift again on every rank of ``comm`` (every rank calls
    it): ``{"bytes", "profile_us", "now_us", "ratio"}`` (now over then), or None when
    there is no profile to compare with."""
    from commsim.bench.timing import ring_shift

    ref = comm.allgather_objects(reference(G))[0]   # rank 0's view decides for all
    if ref is None:
        return None
    nbytes, then = ref
    now = ring_shift(comm, nbytes)
    return {"bytes": nbytes, "profile_us": then * 1e6, "now_us": now * 1e6,
            "ratio": now / then}


def note(drift: dict | None) -> str | None:
    """One line for the header when the machine has drifted beyond :data:`NOTED`."""
    if not drift or abs(drift["ratio"] - 1) <= NOTED:
        return None
    how = "slower" if drift["ratio"] > 1 else "faster"
    return (f"this machine's ring shift of {drift['bytes'] >> 10} KiB took "
            f"{drift['now_us']:.0f} us now and {drift['profile_us']:.0f} us when calibrated "
            f"({drift['ratio']:.2f}x, {how}): predictions from the profile are off by about "
            "as much; calibrate again if it persists")
