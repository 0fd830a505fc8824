"""Who am I: rank, world size and local rank from the launcher's environment variables.

Looked up in this order: torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), Open MPI
(``OMPI_COMM_WORLD_*``), MPICH / Hydra (``PMI_RANK``, ``PMI_SIZE``, ``MPI_LOCALRANKID``),
SLURM (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``); with none of them, a
single process (rank 0 of 1).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from commsim.errors import CommsimError
from commsim.units import parse_size

# (launcher, rank, world size, local rank, local world size)
_LAUNCHERS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job, as the launcher told it."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str
    host: str


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise CommsimError(f"{name} is not set; launch with torchrun, mpirun or srun")
        return default
    try:
        # SLURM writes tasks per node as "4(x2)"; the first number is ours
        return int(str(value).split("(")[0].split(",")[0])
    except ValueError:
        raise CommsimError(f"{name}={value!r} is not a whole number") from None


def detect(env: Mapping[str, str] | None = None) -> RankInfo:
    """The rank information of this process (see the module docstring for the order)."""
    env = os.environ if env is None else env
    host = socket.gethostname()
    for launcher, rank_var, size_var, local_var, local_size_var in _LAUNCHERS:
        if rank_var in env:
            rank = _int(env, rank_var)
            size = _int(env, size_var)
            local = _int(env, local_var, default=rank)
            local_size = _int(env, local_size_var, default=size)
            if not 0 <= rank < size:
                raise CommsimError(f"{rank_var}={rank} is out of range for {size_var}={size}")
            return RankInfo(rank, size, local, local_size, launcher, host)
    return RankInfo(0, 1, 0, 1, "none", host)


def usable_cpus() -> list[int] | None:
    """The ids of the cores this process may run on (its CPU affinity), or None where
    the platform does not say."""
    try:
        return sorted(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return None


def host_cores_per_rank(ranks: list[dict]) -> float:
    """The cores each rank has, from every rank's ``host``, ``cpus`` (:func:`usable_cpus`)
    and ``cores`` (:func:`usable_cores`): per host, the cores its ranks may run on
    together (:func:`host_cores`: ranks that a launcher binds to a core each, as
    ``mpirun`` does up to a core a rank, have a core each, not one between them) over
    its ranks; the fewest of any host."""
    hosts: dict[str, list[dict]] = {}
    for r in ranks:
        hosts.setdefault(r["host"], []).append(r)
    return float(min(host_cores(on) / len(on) for on in hosts.values()))


def host_cores(ranks: list[dict]) -> int:
    """The cores one host's ``ranks`` may run on together: the union of their ``cpus``
    (:func:`usable_cpus`), or the most ``cores`` any of them has where one's are unknown."""
    if all(r.get("cpus") for r in ranks):
        return len(set().union(*(r["cpus"] for r in ranks)))
    return max(int(r.get("cores") or 1) for r in ranks)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, cgroup cpusets,
    a batch scheduler's binding) where the platform tells it, else every core the host
    has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


CPU_CACHES = Path("/sys/devices/system/cpu")


def cpu_caches(cpus: list[int] | None, root: Path = CPU_CACHES) -> dict[str, int]:
    """The last-level caches of the cores ``cpus``: ``{the cores sharing it: bytes}``
    from Linux's sysfs, one entry per cache (cores that share one name it once); empty
    where the platform does not say."""
    out: dict[str, int] = {}
    for cpu in cpus or []:
        best = None
        for index in sorted((root / f"cpu{cpu}" / "cache").glob("index*")):
            try:
                if (index / "type").read_text().strip() == "Instruction":
                    continue
                level = int((index / "level").read_text())
                size = parse_size((index / "size").read_text().strip(), "cache size")
                shared = (index / "shared_cpu_list").read_text().strip()
            except (OSError, ValueError):  # CommsimError is one: an unreadable size
                continue
            if best is None or level > best[0]:
                best = (level, shared, size)
        if best is not None:
            out[best[1]] = best[2]
    return out


def host_cache_bytes(ranks: list[dict]) -> int | None:
    """The cache the ranks of a host share, from every rank's ``host`` and ``caches``
    (:func:`cpu_caches`, or a GPU's own: ``{name: bytes}``): per host, the bytes of the
    distinct caches its ranks use; the least of any host, or None where a rank's are
    unknown."""
    hosts: dict[str, dict] = {}
    for r in ranks:
        if not r.get("caches"):
            return None
        hosts.setdefault(r["host"], {}).update(r["caches"])
    return min(sum(caches.values()) for caches in hosts.values()) if hosts else None
