"""What this host can give a process: memory now available, in bytes.

Used to refuse, up front and in one line, work that cannot fit (a benchmark's buffers,
a simulation's per-transfer arrays) instead of failing inside an allocator.
"""

from __future__ import annotations

import resource


def host_available_memory() -> int | None:
    """Bytes of memory available on this host (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: :func:`host_available_memory`, lowered by
    an address-space limit (``ulimit -v``, RLIMIT_AS) less what the process maps
    already; None when neither is known."""
    host = host_available_memory()
    limits = [] if host is None else [host]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * resource.getpagesize()
            limits.append(max(0, soft - mapped))
        except (OSError, ValueError, IndexError):
            limits.append(soft)
    return min(limits) if limits else None
