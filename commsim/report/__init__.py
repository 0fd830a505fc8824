"""What users see, in one place: tables, figures, HTML and Markdown reports.

Used by the verbs; imports none of their packages (only :mod:`commsim.units` and
:mod:`commsim.errors`), so any verb can render with it.

- :mod:`~commsim.report.tables`: a :class:`~commsim.report.tables.Table` shown as a rich
  table on a terminal, as plain nccl-tests-style columns elsewhere.
- :mod:`~commsim.report.figures`: matplotlib figures (imported lazily) as PNG bytes.
- :mod:`~commsim.report.topology_figure`: ``commsim topo draw``'s pictures, each family
  laid out as people draw it (layers, grids, DGX boxes with rails, summaries).
- :mod:`~commsim.report.document`: a report as blocks; :mod:`~commsim.report.html` and
  :mod:`~commsim.report.markdown` write it (one self-contained page; Markdown + PNGs).
- :mod:`~commsim.report.files`: every file the verbs write goes out atomically (a
  temporary file in the same folder, then ``os.replace``): no partial file on failure.

``commsim compare`` reads bench files (:mod:`commsim.bench.results`), computes the
errors (:mod:`commsim.bench.compare`) and builds its report
(:mod:`commsim.bench.compare_view`) from these pieces.
"""
