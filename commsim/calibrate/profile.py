"""Network profiles: this machine, as measured and fitted, written as a topology YAML.

A profile is a topology file that :func:`commsim.topology.load` reads like any other:

- nodes ``rank0..rank{p-1}`` (kind ``gpu``), two switches per host (``host0.in`` and
  ``host0.out``) and, with several hosts, a ``fabric`` switch joining them;
- every link is one-way. ``rank -> hostH.in`` and ``hostH.out -> rank`` carry the
  ``intra_host`` class: latency half the fitted one-way latency, bandwidth the fitted
  one (what one pair alone reaches). ``hostH.in -> hostH.out`` is the host's **shared
  capacity**: every byte a rank of the host sends or receives crosses it, whatever its
  direction, so it holds what the host moves at once: the ring shift's flows through
  the host over the ring's time per byte (never less than one pair alone; its class
  ``host_capacity``, which a warm call's view speeds: :mod:`commsim.topology.warm`). On a host
  whose copies share one memory bus or too few cores, two flows then each get half of
  it, as measured; where the host has capacity to spare, it never binds.
  ``hostH.out -> fabric -> hostG.in`` carries the ``inter_host`` class (its latency is
  what the extra hops add);
- ``model``: ``first_touch_bandwidth`` (the bytes of fresh memory written over the time
  it took, at 48 to 96 MiB: the page faults' cost per allocation included),
  ``reduce_bandwidth`` (1 / gamma), ``apart_reduce_bandwidth`` (the same add written
  into a third buffer, as commsim's executor reduces out of place), ``step_overhead``,
  ``exchange_overhead`` and ``message_overhead`` (commsim's executor, on top of the
  network latency: a one-way step, a step in which ranks both send and receive, a
  message), ``exchange_latency``
  (what an exchange of every rank at once adds to one pair's latency: the ring shift's
  alpha less the pair's; reported, not charged), ``contention`` (ring shift of
  every rank at once / one pair alone: reported; the predictions get its effect from
  the shared-capacity link, which both the simulator and
  :mod:`commsim.model.on_topology` read) and ``cores_per_rank`` (the host's usable
  cores over its ranks, the fewest of any host: below 2 a rank's reductions cannot
  overlap its transfers, below 1 ranks share cores; the executor's costs were fitted
  under it, and every prediction from the profile assumes it); ``cache_bytes``,
  ``warm_link_speedup`` and ``warm_reduce_bandwidth`` (for calls whose data stays in
  the cache the host's ranks share: :mod:`commsim.topology.warm`);
- ``profile``: how it was made (date, hosts, backend, versions, execution mode), the fit
  of every class with its R^2 and residuals, and the raw measurements.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import yaml

from commsim.calibrate import costs
from commsim.calibrate import fit as fitting
from commsim.calibrate.measure import Measurements
from commsim.errors import CommsimError
from commsim.report.files import write_atomic
from commsim.topology import spec, warm
from commsim.units import format_size, parse_size


def fit_all(m: Measurements, meta: dict) -> dict[str, fitting.Fit]:
    """Every fit a profile needs, by name: each link class, ``ring``, ``reduction``,
    ``first_touch``, then ``overhead`` (commsim's executor) and ``native`` (the backend's
    own allreduce, when a commsim schedule models it): the costs the model on those
    links leaves unexplained (:mod:`commsim.calibrate.costs`). ``meta``: ``backend``,
    ``exec`` (the execution mode measured) and ``versions``. Raises on data that cannot
    support a fit."""
    fits = {name: fitting.fit_alpha_beta(s.sizes, s.seconds, what=f"{name} ping-pong")
            for name, s in m.pairs.items()}
    sizes, seconds = _cold_ring(m)
    fits["ring"] = fitting.fit_alpha_beta(sizes, seconds, what="ring shift")
    fits["reduction"] = fitting.fit_rate(m.reduction.sizes, m.reduction.seconds)
    if m.reduction_apart.sizes:
        fits["reduction_apart"] = fitting.fit_rate(m.reduction_apart.sizes,
                                                   m.reduction_apart.seconds,
                                                   what="reduction into a third buffer")
    if len(m.first_touch.sizes) >= 3:
        fits["first_touch"] = fitting.fit_rate(m.first_touch.sizes, m.first_touch.seconds,
                                               what="first touch")
    if len(m.warm_reduction.sizes) >= 2:
        try:
            fits["warm_reduction"] = fitting.fit_rate(m.warm_reduction.sizes,
                                                      m.warm_reduction.seconds,
                                                      what="warm reduction")
        except CommsimError:
            pass  # no warm rate: warm calls reduce at the cold one
    # the model the costs are fitted against is the one that predicts from the profile:
    # its links, its cores per rank (commsim.model.cores.host_work) and its warm rates
    G = spec.parse({"name": "calibrating", "nodes": [], "links": [],
                    **network(m, fits), "profile": {"hosts": list(dict.fromkeys(m.hosts))},
                    "model": {"cores_per_rank": m.cores_per_rank, **warm_model(m, fits),
                              "reduce_bandwidth": _bw(1.0 / fits["reduction"]["gamma"])}},
                   source="calibrate")
    p, gamma, mode = len(m.hosts), fits["reduction"]["gamma"], meta["exec"]
    fits["overhead"] = costs.fit_executor(m.overhead, G, p, gamma, mode, m.overlap)
    native = costs.fit_native(m.native, G, p, gamma, mode, m.overlap, meta["backend"],
                              meta.get("versions") or {}, len(set(m.hosts)),
                              _first_touch(m))
    if native is not None:
        fits["native"] = native
    return fits


def network(m: Measurements, fits: dict) -> dict:
    """The profile's ``nodes`` and ``links``: the hosts and ranks as measured."""
    hosts = list(dict.fromkeys(m.hosts))
    nodes = [{"name": f"rank{r}", "kind": "gpu"} for r in range(len(m.hosts))]
    links = []
    intra = fits.get("intra_host") or fits["inter_host"]
    flows = ring_flows(m.hosts)
    for h, host in enumerate(hosts):
        nodes += [{"name": f"host{h}.in", "kind": "switch"},
                  {"name": f"host{h}.out", "kind": "switch"}]
        # what the host moves at once, whichever ranks send: the ring shift's flows over
        # its time, and never less than one pair alone moved through it
        capacity = max(1.0 / intra["beta"], flows[host] / fits["ring"]["beta"])
        links.append(_link(f"host{h}.in", f"host{h}.out", 0.0, 1.0 / capacity,
                           warm.CAPACITY_CLASS))
    for r, host in enumerate(m.hosts):
        h = hosts.index(host)
        links += [_link(f"rank{r}", f"host{h}.in", intra["alpha"] / 2, intra["beta"]),
                  _link(f"host{h}.out", f"rank{r}", intra["alpha"] / 2, intra["beta"])]
    if len(hosts) > 1:
        nodes.append({"name": "fabric", "kind": "switch"})
        inter = fits["inter_host"]
        extra = max(0.0, inter["alpha"] - intra["alpha"]) / 2
        for h in range(len(hosts)):
            links += [_link(f"host{h}.out", "fabric", extra, inter["beta"]),
                      _link("fabric", f"host{h}.in", extra, inter["beta"])]
    return {"nodes": nodes, "links": links}


def _cold_ring(m: Measurements) -> tuple[list, list]:
    """The ring shift's sizes and seconds that its links' line is fitted to: without the
    bandwidth-bound sizes whose buffers stayed in the cache (their speedup is fitted
    apart: :func:`warm_model`), where 3 bandwidth-bound sizes are left."""
    keep = [i for i, n in enumerate(m.ring.sizes)
            if not (n >= fitting.LARGE_BYTES and m.fits_cache(n))]
    if sum(m.ring.sizes[i] >= fitting.LARGE_BYTES for i in keep) < 3:
        return list(m.ring.sizes), list(m.ring.seconds)
    return [m.ring.sizes[i] for i in keep], [m.ring.seconds[i] for i in keep]


def warm_model(m: Measurements, fits: dict) -> dict:
    """The profile's model parameters for calls whose data stays in the cache
    (:mod:`commsim.topology.warm`): ``cache_bytes`` where calibrate read it, with
    ``warm_link_speedup`` (:func:`commsim.calibrate.fit.warm_speedup` of the ring shift,
    at the sizes whose send and receive buffers fit) and ``warm_reduce_bandwidth`` where
    they were measured and beat the cold ones."""
    if not m.cache_bytes:
        return {}
    out: dict = {"cache_bytes": int(m.cache_bytes)}
    ring = fits["ring"]
    speedup = fitting.warm_speedup(m.ring.sizes, m.ring.seconds, ring["alpha"], ring["beta"],
                                   m.fits_cache)
    if speedup is not None and speedup > 1.0:
        out["warm_link_speedup"] = round(speedup, 4)
    reduction = fits.get("warm_reduction")
    if reduction is not None and reduction["gamma"] < fits["reduction"]["gamma"]:
        out["warm_reduce_bandwidth"] = _bw(1.0 / reduction["gamma"])
    return out


def warm_summary(data: dict) -> str | None:
    """What a profile (its YAML mapping) predicts for calls whose data stays in the
    cache, in a line for calibrate's summary; None without a cache."""
    model = data["model"]
    cache = model.get("cache_bytes")
    if not cache:
        return None
    per_host = warm.ranks_per_host(data["profile"], data["profile"]["nranks"])
    largest = cache // warm.working_set(1, per_host)
    rates = [f"links {model['warm_link_speedup']:g}x"] if "warm_link_speedup" in model else []
    if "warm_reduce_bandwidth" in model:
        rates.append(f"reductions at {model['warm_reduce_bandwidth']}")
    if not rates:
        return (f"cache {format_size(cache)} a host: calls measured no faster in it than "
                "from memory")
    return (f"cache {format_size(cache)} a host: calls of up to {format_size(largest)} a rank "
            f"stay in it, larger ones in part ({', '.join(rates)})")


def _first_touch(m: Measurements) -> float:
    """Seconds per byte of fresh memory's first writes (0 when not measured)."""
    return sum(m.first_touch.seconds) / sum(m.first_touch.sizes) if m.first_touch.sizes \
        else 0.0


def build(m: Measurements, fits: dict, meta: dict) -> dict:
    """The profile as a YAML-ready mapping. ``meta``: backend, versions, mode, nranks."""
    p = len(m.hosts)
    hosts = list(dict.fromkeys(m.hosts))
    slowest = max((fits[name] for name in m.pairs), key=lambda f: f["beta"])
    contention = fitting.contention(slowest["beta"], fits["ring"]["beta"])
    over = fits["overhead"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {
        "name": default_name(m.hosts, meta["backend"]),
        "description": f"this machine as commsim calibrate measured it ({meta['backend']}, "
                       f"{p} ranks on {len(hosts)} host{'s' if len(hosts) > 1 else ''})",
        **network(m, fits),
        "model": {"reduce_bandwidth": _bw(1.0 / fits["reduction"]["gamma"]),
                  **({"apart_reduce_bandwidth": _bw(1.0 / fits["reduction_apart"]["gamma"])}
                     if "reduction_apart" in fits else {}),
                  "step_overhead": _us(over["per_step"]),
                  "exchange_overhead": _us(over["per_exchange"]),
                  "exchange_latency": _us(exchange_latency(fits, m)),
                  "message_overhead": _us(over["per_message"]),
                  **({"native_message_overhead": _us(fits["native"]["per_message"])}
                     if "native" in fits else {}),
                  "contention": round(contention, 4),
                  **({"first_touch_bandwidth": _bw(1.0 / _first_touch(m))}
                     if "first_touch" in fits else {}),
                  "cores_per_rank": round(m.cores_per_rank, 4), **warm_model(m, fits)},
        "profile": {"tool": "commsim calibrate", "format": FORMAT, "date": now.isoformat(),
                    "hosts": hosts,
                    "nranks": p, **meta,
                    "fits": {name: f.as_dict() for name, f in fits.items()},
                    "pairs": {name: list(pair) for name, pair in m.pair_ranks.items()},
                    "measurements": _raw(m)},
    }


def measurements_of(data: dict) -> Measurements:
    """The raw measurements a profile (its YAML mapping, as :func:`build` writes it)
    keeps, as :func:`commsim.calibrate.measure.measure` returned them. Raises
    :class:`CommsimError` naming what a file lacks."""
    from commsim.calibrate.measure import Series

    block = data.get("profile") if isinstance(data, dict) else None
    raw = (block or {}).get("measurements")
    if not isinstance(raw, dict) or not {"ring", "reduction", "overhead"} <= set(raw):
        raise CommsimError("profile.measurements: this file keeps no raw measurements "
                           "(ring, reduction, overhead) to fit again; calibrate again")

    def series(name: str) -> Series:
        s = raw.get(name) or {}
        return Series(list(s.get("bytes") or []), [float(t) for t in s.get("seconds") or []])

    m = Measurements(_rank_hosts(data, block),
                     {name[len("pair_"):]: series(name) for name in raw
                      if name.startswith("pair_")},
                     {name: tuple(pair) for name, pair in (block.get("pairs") or {}).items()},
                     series("ring"), series("reduction"))
    m.overhead = dict(raw["overhead"])
    m.first_touch, m.native = series("first_touch"), series("native")
    m.reduction_apart = series("reduction_apart")
    model = data.get("model") or {}
    m.cores_per_rank = float(model.get("cores_per_rank", 2.0))
    if model.get("cache_bytes"):
        m.cache_bytes = parse_size(model["cache_bytes"], "model.cache_bytes")
    m.warm_reduction = series("warm_reduction")
    m.ring_passes = [list(p) for p in (raw.get("ring_passes") or {}).get("seconds") or []]
    return m


def _rank_hosts(data: dict, block: dict) -> list[str]:
    """Each rank's host, from the profile's links ``rankR -> hostH.in`` (:func:`network`)."""
    hosts, nranks = block.get("hosts") or [], int(block.get("nranks") or 0)
    into = {str(link.get("src")): str(link.get("dst")) for link in data.get("links") or []
            if isinstance(link, dict)}
    out = []
    for r in range(nranks):
        switch = into.get(f"rank{r}", "")
        index = switch.removeprefix("host").removesuffix(".in")
        if not index.isdigit() or int(index) >= len(hosts):
            raise CommsimError(f"links: rank{r} has no link to a host's switch (hostH.in); "
                               "this is not a profile that calibrate wrote")
        out.append(hosts[int(index)])
    return out


def refit(data: dict) -> dict:
    """A profile (its YAML mapping) fitted again, with this version's fits, from the raw
    measurements it keeps (:func:`measurements_of`): the same machine, nothing measured
    again. Its date and format are this fit's."""
    block = data["profile"] if isinstance(data.get("profile"), dict) else {}
    m = measurements_of(data)
    meta = {"backend": block.get("backend"), "exec": block.get("exec", "dataflow"),
            "versions": block.get("versions") or {}}
    return build(m, fit_all(m, meta), meta)


def exchange_latency(fits: dict, m: Measurements) -> float:
    """Seconds an exchange step (every rank sending and receiving at once, the ring
    shift) adds to the latency of one pair alone (the fastest class's): never below 0."""
    alpha = min(f["alpha"] for name, f in fits.items() if name in m.pairs)
    return max(0.0, fits["ring"]["alpha"] - alpha)


def ring_flows(hosts: list[str]) -> dict[str, int]:
    """``{host: n}``: the ring shift's flows (rank r to r+1) that cross each host's
    shared capacity, sending from it or arriving on it."""
    p = len(hosts)
    out = dict.fromkeys(hosts, 0)
    for r in range(p):
        src, dst = hosts[r], hosts[(r + 1) % p]
        out[src] += 1
        if dst != src:
            out[dst] += 1
    return out


def _link(src: str, dst: str, latency: float, beta: float, cls: str | None = None) -> dict:
    """One direction only: the host's shared capacity makes every path one-way."""
    return {"src": src, "dst": dst, "bandwidth": _bw(1.0 / beta), "latency": _us(latency),
            "duplex": False, **({"class": cls} if cls else {})}


def _bw(rate: float) -> str:
    return f"{rate / 1e9:.6g}GB/s"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.6g}us"


def _raw(m: Measurements) -> dict:
    series = {f"pair_{name}": s for name, s in m.pairs.items()}
    series.update(ring=m.ring, reduction=m.reduction)
    if m.reduction_apart.sizes:
        series["reduction_apart"] = m.reduction_apart
    if m.warm_reduction.sizes:
        series["warm_reduction"] = m.warm_reduction
    if m.first_touch.sizes:
        series["first_touch"] = m.first_touch
    if m.native.sizes:
        series["native"] = m.native
    out = {name: {"bytes": list(map(int, s.sizes)), "seconds": [float(t) for t in s.seconds]}
           for name, s in series.items()}
    out["overhead"] = {k: [v if isinstance(v, str) else float(v) for v in vals]
                       for k, vals in m.overhead.items()}
    if m.ring_passes:
        out["ring_passes"] = {"bytes": list(map(int, m.ring.sizes)),
                              "seconds": [[float(t) for t in p] for p in m.ring_passes]}
    return out


FORMAT = 9  # 2: shared host capacity, two-regime fits, cold reduction; 3: first touch;
# 4: exchange steps apart from one-way ones (exchange_overhead, exchange_latency);
# 5: executor costs fitted against the model at 256 KiB and 2 MiB too; the native
# allreduce's cost per message (native_message_overhead); 6: cores_per_rank (whether
# reductions overlap transfers, so that predict and simulate assume what bench does);
# the ring shift the median of passes at the start and the end; 7: cores_per_rank from
# the union of the host's ranks' affinities (mpirun binds 2 ranks to a core each), the
# native cost fitted on gloo's rings with two segments in flight; 8: warm calls
# (cache_bytes, warm_link_speedup, warm_reduce_bandwidth: commsim.topology.warm); 9: the
# reduction written into a third buffer (apart_reduce_bandwidth), for out-of-place calls


def stale(path: Path, largest: int | None = None) -> str | None:
    """Why the profile at ``path`` should be measured again (written by an older
    calibration, measured to a smaller size than ``largest`` bytes, or unreadable: not
    UTF-8, not YAML, not a profile), or None when it is current or absent. Read by the
    one guarded YAML reader (:func:`commsim.topology.spec.read_yaml`)."""
    if not spec.is_file(path):
        return None
    try:
        data = spec.read_yaml(path, "profile")
    except CommsimError as exc:
        return f"cannot be read as a profile ({exc})"
    block = data.get("profile") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        return "cannot be read as a profile (it has no profile block)"
    version = block.get("format", 1)
    if version != FORMAT:
        return f"is from an older calibration (format {version}, now {FORMAT})"
    ring = (block.get("measurements") or {}).get("ring") or {}
    measured = max(ring.get("bytes") or [0])
    if largest is not None and measured < largest:
        return (f"was measured up to {format_size(int(measured))}, not the "
                f"{format_size(int(largest))} asked (--max-size)")
    return None


def default_name(hosts: list[str], backend: str) -> str:
    first = hosts[0] if hosts else "localhost"
    extra = len(set(hosts)) - 1
    return f"{first}{f'+{extra}' if extra else ''}-{backend}-{len(hosts)}"


def default_path(hosts: list[str], backend: str) -> Path:
    """``$XDG_CACHE_HOME/commsim/profiles/HOST-BACKEND-NRANKS.yaml`` (``~/.cache`` by
    default): one profile per host, backend and rank count."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "commsim" / "profiles" / f"{default_name(hosts, backend)}.yaml"


def write(profile: dict, path: Path) -> Path:
    """Write atomically (:func:`commsim.report.files.write_atomic`: a temporary file in
    the same folder, then a rename; missing folders created, nothing left behind on an
    error)."""
    path = Path(path)
    text = "# commsim network profile: load it with --profile or --topology\n" + \
        yaml.safe_dump(_plain(profile), sort_keys=False, default_flow_style=None, width=100)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise CommsimError(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    return path


def _plain(value):
    """Lists, dicts, str, int, float and None only (what safe YAML writes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # torch's version is a str subclass that safe YAML refuses
    return int(value) if isinstance(value, int) else float(value)
