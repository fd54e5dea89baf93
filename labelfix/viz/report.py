"""The HTML report of ``labelfix stats --html``: one self-contained file to open in a browser.

Charts and thumbnails are inline ``data:`` URIs, the style sheet and the few lines of script
(click a column header of the per-image table to sort it) are inline too: no server, no network.
Every number comes from the same :class:`~labelfix.checks.stats.DatasetStats` as
``stats --json`` (which is also embedded, as ``<script type="application/json"
id="labelfix-stats">``) and the per-image rows from the same FileReports as ``--per-image``.
The thumbnails are those of ``labelfix show --worst`` (:mod:`labelfix.viz.sheet`).

This is the only module that imports matplotlib, and only when a report is made.

On a dataset of your own::

    text = html_report(stats, reports, paths=["masks/"])
"""

from __future__ import annotations

import base64
import dataclasses
import html
import importlib.util
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from labelfix._version import __version__
from labelfix.checks.scan import FileReport
from labelfix.checks.stats import DatasetStats, unused_ignore_message
from labelfix.errors import LabelfixError, MissingExtra
from labelfix.io import fs
from labelfix.io.masks import KINDS, read_mask
from labelfix.labels.colormap import ColourPolicy
from labelfix.viz.colours import HATCH, ClassColours, class_colours
from labelfix.viz.selection import plan_for, render_plan, survey_file
from labelfix.viz.sheet import RenderedMask, ShowOptions, caption_lines, legend_entries, png_bytes

#: The one-line error when matplotlib is missing.
NEEDS_MATPLOTLIB = "--html needs matplotlib: pip install 'labelfix[viz]'"


def require_matplotlib() -> None:
    """Raise MissingExtra (the CLI exits 1 with :data:`NEEDS_MATPLOTLIB`) without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtra(NEEDS_MATPLOTLIB)


@dataclass(frozen=True)
class ReportOptions:
    """``worst``: thumbnails of that many masks (most problem pixels, then most void);
    ``thumbnail_size``: their longer side, at most; ``max_rows``: per-image rows at most (the
    worst are kept); ``max_bars``: values in the chart at most (the most pixels are kept);
    ``class_names``: names of class ids 0, 1, ...; ``artifacts``: problems include stray pixels
    (as ``stats --artifacts``)."""

    title: str = "labelfix stats"
    worst: int = 8
    thumbnail_size: int = 200
    max_rows: int = 5000
    max_bars: int = 60
    class_names: tuple[str, ...] | None = None
    artifacts: bool = False


def problem_pixels(report: FileReport, stats: DatasetStats, *, artifacts: bool = False) -> int:
    """A mask's pixels that are no class id (and with ``artifacts``, its suspect-value pixels
    and specks): how ``show --worst`` ranks masks, from the scan's report alone."""
    bad = sum(
        c
        for v, c in zip(report.values, report.counts, strict=True)
        if v not in stats.ignore
        and (v < 0 or (stats.num_classes is not None and v >= stats.num_classes))
    )
    if artifacts:
        bad += sum(s.pixels for s in report.suspects) + report.specks
    return bad


def _rank(reports: Sequence[FileReport], stats: DatasetStats, artifacts: bool) -> list[FileReport]:
    """Label masks, worst first (problem pixels, then void pixels, then path order)."""
    labelled = [r for r in reports if r.is_label]
    return sorted(
        labelled,
        key=lambda r: (-problem_pixels(r, stats, artifacts=artifacts), -r.void_pixels),
    )


def html_report(
    stats: DatasetStats,
    reports: Sequence[FileReport],
    *,
    paths: Sequence[str | os.PathLike] = (),
    options: ReportOptions = ReportOptions(),
    read: ColourPolicy | None = None,
) -> str:
    """The report as one HTML document (a string). ``reports`` are the scan's per-file reports
    (``scan_dataset(..., on_file=reports.append)``); ``read`` is the colormap the scan used."""
    show_options = ShowOptions(
        ignore=stats.ignore,
        num_classes=stats.num_classes,
        artifacts=options.artifacts and stats.num_classes is not None,
        max_size=options.thumbnail_size,
    )
    ranked = _rank(reports, stats, show_options.artifacts)
    colours = _colours(stats, reports, read, options.class_names)
    thumbnails = _thumbnails(ranked[: options.worst], show_options, read, colours, options)
    where = ", ".join(os.fspath(p) for p in paths)
    parts = [
        _head(f"{options.title}: {where}" if where else options.title),
        f"<h1>{_e(options.title)}</h1>",
        f'<p class="muted">{_e(where)} · labelfix {_e(__version__)}</p>',
        _summary(stats),
        _problems(stats),
        _values(stats, colours, options),
        _storage(stats),
        _weights(stats),
        _worst(thumbnails, colours, show_options),
        _per_image(reports, ranked, stats, options, artifacts=show_options.artifacts),
        _embedded_json(stats),
        f"<script>{SORT_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------- pieces


def _e(text: object) -> str:
    return html.escape(fs.printable(str(text)), quote=True)  # names that are not UTF-8 too


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _num(value: float | int, text: str | None = None, cls: str = "num") -> str:
    """A table cell that sorts by ``value`` and shows ``text``."""
    shown = f"{value:,}" if text is None else text
    return f'<td class="{cls}" data-sort="{value!r}">{_e(shown)}</td>'


def _colours(
    stats: DatasetStats,
    reports: Sequence[FileReport],
    read: ColourPolicy | None,
    class_names: Sequence[str] | None,
) -> ClassColours:
    """The colours ``show`` would use for the whole dataset: the colormap, else the palette of
    the first palette mask, else generated."""
    palette = None
    if read is None:
        first = next((r for r in reports if r.kind == "palette"), None)
        if first is not None:
            try:
                palette = read_mask(first.path).palette
            except (OSError, LabelfixError):
                palette = None
    return class_colours(
        values=[v for v in stats.values if stats.role(v) == "class" and v >= 0],
        palette=palette,
        colormap=read.colormap if read is not None else None,
        class_names=class_names,
    )


def _thumbnails(
    reports: Sequence[FileReport],
    options: ShowOptions,
    read: ColourPolicy | None,
    colours: ClassColours,
    report_options: ReportOptions,
) -> list[RenderedMask]:
    surveys = [survey_file((r.path, r.relpath), options=options, colours=read) for r in reports]
    plan = plan_for(
        [s for s in surveys if s.error is None],
        options=options,
        read=read,
        class_names=report_options.class_names,
    )
    plan = dataclasses.replace(plan, colours=colours)
    return [item for item in render_plan(plan, jobs=1) if not isinstance(item, tuple)]


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
    )


def _summary(stats: DatasetStats) -> str:
    sizes = ", ".join(
        f"{w}x{h} ({n})" for (h, w), n in sorted(stats.sizes.items(), key=lambda kv: -kv[1])[:8]
    )
    cards = [
        ("files", "files", stats.files, f"{stats.files:,}"),
        ("label-files", "label masks", stats.label_files, f"{stats.label_files:,}"),
        ("total-pixels", "pixels", stats.total_pixels, f"{stats.total_pixels:,}"),
    ]
    if stats.ignore:
        ignore = ", ".join(map(str, stats.ignore))
        cards.append(
            (
                "void-pixels",
                f"void px (ignore {ignore})",
                stats.void_pixels,
                f"{stats.void_pixels:,}",
            )
        )
        cards.append(("void-share", "void share", stats.void_share, _pct(stats.void_share)))
    if stats.num_classes is not None:
        cards.append(("num-classes", "classes", stats.num_classes, str(stats.num_classes)))
    body = "".join(
        f'<div class="card"><div class="big" id="{key}" data-value="{value!r}">{_e(text)}</div>'
        f'<div class="muted">{_e(label)}</div></div>'
        for key, label, value, text in cards
    )
    return (
        f'<section id="summary"><h2>Summary</h2><div class="cards">{body}</div>'
        f"<p>Sizes (WxH): {_e(sizes or 'none')}</p></section>"
    )


def _problems(stats: DatasetStats) -> str:
    items: list[str] = []
    n = stats.num_classes
    for v, files in sorted(stats.out_of_range.items()):
        shown = ", ".join(files[:10]) + (f", ... {len(files) - 10} more" if len(files) > 10 else "")
        items.append(
            f"value <b>{v}</b> is not a class id (expected 0..{n - 1}"
            + (f" or ignore {', '.join(map(str, stats.ignore))}" if stats.ignore else "")
            + f") in {len(files)} file(s): {_e(shown)}"
        )
    for path, reason in stats.unreadable:
        items.append(f"unreadable: {_e(path)}: {_e(reason)}")
    for path, kind in stats.not_labels:
        items.append(f"{_e(path)}: {_e(kind)} mask, not counted ({_e(KINDS.get(kind))})")
    for path in stats.all_void:
        items.append(f"entirely void: {_e(path)}")
    for v in stats.unused_ignore:
        items.append(_e(unused_ignore_message(v, stats)))
    for v, (f, p, fr) in sorted(stats.suspects.items()):
        share = _pct(fr / p if p else 0.0)
        items.append(
            f"value {v} looks like a lossy artifact in {f} file(s): {p:,} px, {share} on "
            "boundaries between two other values"
        )
    if stats.interpolated:
        items.append(
            f"{len(stats.interpolated)} mask(s) look interpolated (resized or JPEG): "
            + _e(", ".join(stats.interpolated[:10]))
        )
    if items:
        body = '<ul class="problems">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    elif n is not None:
        body = f'<p class="ok">No problems: every value is a class id (0..{n - 1}) or ignore.</p>'
    else:
        body = '<p class="muted">No file problems. Pass --num-classes to check the values.</p>'
    return f'<section id="problems"><h2>Problems</h2>{body}</section>'


def _value_label(v: int, stats: DatasetStats, colours: ClassColours) -> str:
    role = stats.role(v)
    if role == "ignore":
        return f"{v} void"
    if role == "out of range" or v < 0:
        return f"{v} (not a class)"
    name = colours.name(v)
    return name if name == f"class {v}" else f"{v} {name}"


def _values(stats: DatasetStats, colours: ClassColours, options: ReportOptions) -> str:
    if not stats.values:
        return ""
    total = stats.total_pixels or 1
    rows = []
    for v, s in sorted(stats.values.items()):
        role = stats.role(v)
        swatch = _swatch(role, colours.colour(v), colours.highlight, v)
        fringe = _num(s.fringe / s.pixels, _pct(s.fringe / s.pixels)) if stats.artifacts else ""
        rows.append(
            f'<tr data-value="{v}"><td class="num">{v}</td>'
            f"<td>{swatch}{_e(_value_label(v, stats, colours))}</td><td>{_e(role)}</td>"
            f"{_num(s.pixels)}{_num(s.pixels / total, _pct(s.pixels / total))}{_num(s.images)}"
            f"{fringe}</tr>"
        )
    head = "<th>value</th><th>name</th><th>role</th><th>pixels</th><th>share</th><th>images</th>"
    head += "<th>on fringes</th>" if stats.artifacts else ""
    chart = _chart(stats, colours, options)
    return (
        '<section id="values"><h2>Classes and values</h2>'
        f'<img class="chart" alt="pixel share and images per value" src="{chart}">'
        f'<table id="values-table" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _swatch(role: str, colour, highlight, value: int) -> str:
    if role == "ignore":
        return '<span class="swatch hatch"></span>'
    rgb = highlight if role == "out of range" or value < 0 else colour
    return f'<span class="swatch" style="background:rgb{tuple(rgb)}"></span>'


def _chart(stats: DatasetStats, colours: ClassColours, options: ReportOptions) -> str:
    """Pixel share and image count per value: two horizontal bar charts, as a data: URI."""
    from matplotlib.figure import Figure  # only here: `labelfix stats` stays fast

    values = sorted(stats.values.items(), key=lambda kv: -kv[1].pixels)[: options.max_bars]
    values.sort()
    labels = [_value_label(v, stats, colours) for v, _ in values]
    total = stats.total_pixels or 1
    shares = [100 * s.pixels / total for _, s in values]
    images = [s.images for _, s in values]
    fill, hatches = [], []
    for v, _ in values:
        role = stats.role(v)
        rgb = colours.highlight if role == "out of range" or v < 0 else colours.colour(v)
        fill.append(tuple(c / 255 for c in (HATCH[1] if role == "ignore" else rgb)))
        hatches.append("////" if role == "ignore" else "")
    height = 1.2 + 0.32 * len(values)
    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    share_ax, image_ax = fig.subplots(1, 2, sharey=True)
    ys = list(range(len(values)))
    for ax, data, title, fmt in (
        (share_ax, shares, "pixel share (%)", "{:.1f}%"),
        (image_ax, images, f"images holding it (of {stats.label_files})", "{:d}"),
    ):
        bars = ax.barh(ys, data, color=fill, edgecolor="#444444", linewidth=0.6)
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.bar_label(bars, labels=[fmt.format(d) for d in data], padding=3, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(x=0.15)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9)
    share_ax.set_yticks(ys, labels)
    share_ax.invert_yaxis()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _storage(stats: DatasetStats) -> str:
    if not stats.kinds:
        return ""
    rows = "".join(
        f'<tr data-kind="{_e(kind)}"><td>{_e(kind)}</td>{_num(n)}'
        f'<td class="{"trap" if KINDS.get(kind) else "muted"}">{_e(KINDS.get(kind) or "-")}</td>'
        "</tr>"
        for kind, n in sorted(stats.kinds.items(), key=lambda kv: list(KINDS).index(kv[0]))
    )
    return (
        '<section id="storage"><h2>Storage kinds and their traps</h2>'
        "<table id='storage-table'><thead><tr><th>kind</th><th>files</th>"
        "<th>trap for TensorFlow</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _weights(stats: DatasetStats) -> str:
    weights = stats.class_weights()
    if not weights:
        return ""
    rows = "".join(
        f'<tr><td class="num">{c}</td>{_num(w, f"{w:.4f}")}'
        f"<td>{'' if stats.values.get(c) else 'no pixel: 1.0, not measured'}</td></tr>"
        for c, w in weights.items()
    )
    return (
        '<section id="weights"><h2>Suggested class weights</h2>'
        '<p class="muted">Median-frequency balancing, as <code>labelfix train --class-weights '
        "auto</code>.</p><table id='weights-table'><thead><tr><th>class</th><th>weight</th>"
        "<th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _worst(shown: Sequence[RenderedMask], colours: ClassColours, options: ShowOptions) -> str:
    if not shown:
        return ""
    figures = []
    for item in shown:
        name, detail = caption_lines(item, options=options)
        uri = "data:image/png;base64," + base64.b64encode(png_bytes(item.image)).decode("ascii")
        alert = " alert" if item.problem_pixels else ""
        figures.append(
            f'<figure><img alt="{_e(name)}" src="{uri}"><figcaption>{_e(name)}'
            f'<br><span class="muted{alert}">{_e(detail)}</span></figcaption></figure>'
        )
    legend = []
    for entry in legend_entries(shown, colours=colours, options=options):
        if entry.kind == "more":  # the classes left out have no one colour
            legend.append(f'<li class="muted">{_e(entry.label)}</li>')
            continue
        cls = " hatch" if entry.kind == "void" else ""
        style = "" if entry.kind == "void" else f' style="background:rgb{tuple(entry.colour)}"'
        legend.append(f'<li><span class="swatch{cls}"{style}></span>{_e(entry.label)}</li>')
    return (
        '<section id="worst"><h2>Worst masks</h2>'
        '<p class="muted">Most problem pixels, then most void pixels; drawn as '
        f"<code>labelfix show --worst {len(shown)}</code> draws them.</p>"
        f'<div class="thumbs">{"".join(figures)}</div>'
        f'<ul class="legend">{"".join(legend)}</ul></section>'
    )


def _per_image(
    reports: Sequence[FileReport],
    ranked: Sequence[FileReport],
    stats: DatasetStats,
    options: ReportOptions,
    *,
    artifacts: bool,
) -> str:
    kept = {id(r) for r in ranked[: options.max_rows]}
    kept |= {id(r) for r in reports if not r.is_label}
    rows = []
    for r in reports:
        if id(r) not in kept:
            continue
        pixels = r.pixels or 1
        bad = problem_pixels(r, stats, artifacts=artifacts) if r.is_label else 0
        bad_values = " ".join(str(b.value) for b in r.bad_values)
        note = r.error or ("" if r.is_label else f"{r.kind} mask, not counted")
        rows.append(
            f'<tr><td class="path">{_e(r.relpath)}</td><td>{_e(r.kind or "")}</td>'
            f"{_num(r.pixels, f'{r.width}x{r.height}' if r.pixels else '')}"
            f"{_num(len([v for v in r.values if stats.role(v) == 'class']))}"
            f"{_num(r.void_pixels)}{_num(r.void_pixels / pixels, _pct(r.void_pixels / pixels))}"
            f"{_num(bad)}<td>{_e(bad_values)}</td><td>{_e(note)}</td></tr>"
        )
    more = ""
    if len(rows) < len(reports):
        more = (
            f'<p class="muted">The {len(rows):,} worst of {len(reports):,} masks; '
            "<code>--per-image rows.csv</code> lists them all.</p>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "mask",
            "kind",
            "size",
            "classes",
            "void px",
            "void",
            "problem px",
            "bad values",
            "note",
        )
    )
    return (
        '<section id="per-image"><h2>Per image</h2><p class="muted">Click a column header to '
        f"sort.</p>{more}"
        f'<table id="per-image-table" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _embedded_json(stats: DatasetStats) -> str:
    data = json.dumps(stats.to_dict()).replace("</", "<\\/")
    return f'<script type="application/json" id="labelfix-stats">{data}</script>'


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
  max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;
  border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#666} .alert{color:#be003c} .ok{color:#16794a}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.big{font-size:20px;font-weight:600}
table{border-collapse:collapse;margin:8px 0} th,td{padding:3px 10px;border-bottom:1px solid #eee;
  text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"} th[data-dir=desc]::after{content:" \\25BC"}
td.trap{color:#8a4b00} ul.problems li{color:#be003c;margin:2px 0}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #999;margin-right:6px;
  vertical-align:-2px}
.hatch{background:repeating-linear-gradient(45deg,rgb(48,48,48) 0 3px,rgb(216,216,216) 3px 6px)}
img.chart{max-width:100%;display:block;margin:8px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0}
figure img{image-rendering:pixelated;border:1px solid #aaa;display:block}
figcaption{font-size:12px;max-width:220px;word-break:break-all}
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px 18px}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.dataset.dir !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) { var c = row.cells[col]; return c.dataset.sort || c.textContent; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? d : -d;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
