"""``commsim topo``: list, show, draw and export topologies.

::

    commsim topo list
    commsim topo show fat-tree-k8        # summary, then line and effective rate per link class
    commsim topo draw leaf-spine-2to1 -o leaf-spine.png      # needs the plot extra
    commsim topo export fat-tree-k8 --format simgrid -o platform.xml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from commsim import topology
from commsim.cli.common import check_output
from commsim.errors import CommsimError
from commsim.report import tables
from commsim.report.files import write_atomic
from commsim.report.topology_figure import SUMMARIZE_ABOVE

DRAW_LIMIT = 600  # nodes drawn; a larger drawing is an unreadable hairball
MAX_DPI = 600     # --dpi: the largest figure (18 x 14 in) is then 90 megapixels


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "topo", help="list, show, draw and export network topologies",
        description="Network topologies: presets shipped in topologies/ (also searched: "
        "$COMMSIM_TOPOLOGY_PATH) or YAML files. Bandwidths are per direction in GB/s "
        "(1e9 bytes/s); latencies in us.")
    sub = parser.add_subparsers(dest="topo_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list the presets: name, gpus, description")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object a preset: name, gpus, description, path "
                   "(error instead of gpus for a preset that does not load)")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="summary: ranks, switches, links, speeds, diameter, "
                       "bisection bandwidth; line rate, efficiency and effective rate per "
                       "link class")
    p.add_argument("topology", metavar="NAME|PATH")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (SI units)")
    p.set_defaults(func=_show)

    p = sub.add_parser("draw", help="draw the topology to an image, laid out as its family "
                       "is drawn (needs the plot extra)",
                       description="Draw a topology as people draw its family: a ring as a "
                       "circle, a torus as a grid, fat-trees and leaf-spines in layers (link "
                       "speeds and oversubscription labelled), DGX nodes as boxes with their "
                       "rails, dragonfly groups around a circle; anything else in a spring "
                       "layout. Large fabrics are summarized: one node, pod, leaf or group in "
                       "full, the rest as boxes with counts.")
    p.add_argument("topology", metavar="NAME|PATH")
    p.add_argument("-o", "--output", required=True,
                   help="image file, e.g. topo.png or topo.svg (the suffix picks the format; "
                   "missing folders are created)")
    p.add_argument("--summarize-above", type=int, default=SUMMARIZE_ABOVE, metavar="GPUS",
                   help="summarize a fat-tree, leaf-spine, star, DGX cluster or dragonfly of "
                   f"more gpus than this (default {SUMMARIZE_ABOVE}; 0: always)")
    p.add_argument("--max-nodes", type=int, default=DRAW_LIMIT,
                   help="refuse a picture of more nodes than this, after summarizing "
                   f"(default {DRAW_LIMIT})")
    p.add_argument("--dpi", type=int, default=150, help="resolution of a PNG (default 150)")
    p.set_defaults(func=_draw)

    p = sub.add_parser("export", help="write the topology as a SimGrid platform or YAML")
    p.add_argument("topology", metavar="NAME|PATH")
    p.add_argument("--format", choices=("simgrid", "yaml"), default="yaml",
                   help="simgrid: platform XML v4.1 (a host per gpu, a link per direction, "
                   "explicit routes); yaml: a topology file (default)")
    p.add_argument("--builder-form", action="store_true",
                   help="yaml: write builder + params instead of every node and link")
    p.add_argument("-o", "--output", help="output file (default: standard output; missing "
                   "folders are created)")
    p.set_defaults(func=_export)


def _gbps(bytes_per_s: float) -> str:
    gbps = bytes_per_s / 1e9
    return f"{gbps:,.0f}" if gbps >= 1000 else f"{gbps:.4g}"


def _list(args) -> int:
    from commsim.topology.spec import find_preset

    table = tables.Table("commsim topology presets", ["name", "gpus", "description"],
                         align=["l", "r", "l"])
    for name in topology.presets():
        record = {"name": name, "path": str(find_preset(name))}
        try:
            G = topology.load(name)
        except CommsimError as exc:  # one broken user preset should not hide the others
            record["error"] = str(exc)
            table.add([name, "-", f"error: {exc}"])
        else:
            record.update(gpus=len(topology.gpus(G)),
                          description=str(G.graph.get("description", "")))
            table.add([name, str(record["gpus"]), record["description"]])
        if args.json:
            print(json.dumps(record))
    if not args.json:
        tables.show(table)
    return 0


def _show(args) -> int:
    G = topology.load(args.topology)
    s = topology.summary(G)
    if args.json:
        s = dict(s, link_speeds=[{"bandwidth": bw, "links": n}
                                 for bw, n in s["link_speeds"].items()])
        print(json.dumps(s, indent=2))
        return 0
    summary = tables.Table(f"topology {s['name']}", ["property", "value", "unit"],
                           align=["l", "r", "l"])
    summary.add(["ranks (gpus)", str(s["gpus"]), "gpus"])
    summary.add(["switches", str(s["switches"]), "nodes"])
    summary.add(["nics", str(s["nics"]), "nodes"])
    if s["hosts"]:
        summary.add(["hosts", str(s["hosts"]), "nodes"])
    summary.add(["links", str(s["links"]), "directed (2 per duplex cable)"])
    for bw, count in s["link_speeds"].items():
        summary.add(["  link speed", _gbps(bw), f"GB/s effective per direction, x{count} links"])
    note = "" if s["diameter_note"] == "exact" else f" ({s['diameter_note']})"
    summary.add(["diameter", str(s["diameter_hops"]), f"hops between gpus{note}"])
    summary.add(["diameter latency", f"{s['diameter_latency'] * 1e6:.4g}",
                 f"us between gpus{note}"])
    if s["bisection_bandwidth"] is None:
        summary.add(["bisection bandwidth", "-", s["bisection_note"]])
    else:
        summary.add(["bisection bandwidth", _gbps(s["bisection_bandwidth"]),
                     f"GB/s one direction ({s['bisection_note']})"])
    if "oversubscription" in G.graph:
        summary.add(["oversubscription", f"{G.graph['oversubscription']:.3g}",
                     "host-facing / spine-facing bw per leaf"])
    notes = G.graph.get("notes")
    lines = [f"note: {line}" for line in ([notes] if isinstance(notes, str) else notes or [])]
    if s["description"]:
        print(s["description"])
    tables.show([summary, _rates_table(s)], lines=lines)
    return 0


def _rates_table(s: dict) -> tables.Table:
    """Line rate, efficiency and effective rate (what the simulator and model use) per
    class of link."""
    title = "link rates per class (GB/s per direction; effective = line rate x efficiency)"
    if s["ideal"]:
        title += "; ideal: every link at line rate"
    table = tables.Table(title, ["link class", "links", "line rate (GB/s)", "efficiency",
                                 "effective (GB/s)"])
    for row in s["link_classes"]:
        table.add([row["link_class"], str(row["links"]), _gbps(row["line_rate"]),
                   f"{row['efficiency']:.4g}", _gbps(row["bandwidth"])])
    return table


def _draw(args) -> int:
    try:
        import matplotlib  # noqa: F401  (only to say what to install)
    except ImportError:
        raise CommsimError("topo draw needs matplotlib; install the plot extra: "
                           "pip install 'commsim[plot]'") from None
    from matplotlib.backend_bases import FigureCanvasBase

    from commsim.report import topology_figure
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    fmt = Path(args.output).suffix.lower().lstrip(".")
    if fmt not in formats:
        # matplotlib would add .png to a bare name, or fail only after drawing
        raise CommsimError(f"--output: {args.output!r} needs an image suffix that names the "
                           f"format, e.g. .png or .svg (one of {', '.join(formats)})")
    for flag, value, least in (("--max-nodes", args.max_nodes, 1),
                               ("--summarize-above", args.summarize_above, 0),
                               ("--dpi", args.dpi, 10)):
        if value < least:
            raise CommsimError(f"{flag}: {value} must be at least {least}")
    if args.dpi > MAX_DPI:   # a picture of gigapixels: matplotlib fails, or the memory does
        raise CommsimError(f"--dpi: {args.dpi} is more than {MAX_DPI}; give a lower "
                           "resolution (or an .svg, which has none)")
    check_output(args.output, "--output")
    G = topology.load(args.topology)
    try:
        scene = topology_figure.scene(G, summarize_above=args.summarize_above,
                                      max_nodes=args.max_nodes)
    except topology_figure.TooLarge as exc:
        raise CommsimError(f"topology {G.graph['name']!r}: a picture of {exc.nodes} nodes is "
                           f"too many to draw legibly (--max-nodes {args.max_nodes}); lower "
                           "--summarize-above, draw a smaller variant or raise --max-nodes"
                           ) from None
    data = topology_figure.render(scene, fmt=fmt, dpi=args.dpi)
    try:
        write_atomic(args.output, data)
    except OSError as exc:
        raise CommsimError(f"--output: cannot write {args.output!r}: "
                           f"{exc.strerror or exc}") from None
    how = scene.family.replace("_", "-") + " layout" + (", summarized" if scene.summarized
                                                        else "")
    print(f"wrote {args.output} ({len(topology.gpus(G))} gpus, {G.number_of_nodes()} nodes; "
          f"{how})")
    return 0


def _export(args) -> int:
    if args.builder_form and args.format != "yaml":
        raise CommsimError(f"--builder-form: only --format yaml has a builder form, not "
                           f"{args.format}; drop --builder-form")
    if args.output is not None:
        check_output(args.output, "--output")
    G = topology.load(args.topology)
    if args.format == "simgrid":
        from commsim.topology.simgrid import to_simgrid_xml
        text = to_simgrid_xml(G)
    else:
        from commsim.topology.spec import dumps
        text = dumps(G, form="builder" if args.builder_form else "explicit")
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomic(args.output, text)
    except OSError as exc:
        raise CommsimError(f"--output: cannot write {args.output!r}: {exc.strerror}") from None
    print(f"wrote {args.output} ({args.format}, {len(topology.gpus(G))} gpus, "
          f"{G.number_of_edges()} directed links)", file=sys.stderr)
    return 0

