"""``geobind demo``'s report: one HTML page with the metrics, the maps, the timings and what next.

:func:`write_report` writes ``report.html`` into the demo's folder: the evaluation table with the
baselines computed in the same run, each query's map (the static PNG and its AUROC against the
land-cover truth), the interactive page (``maps/explore.html``, embedded), the time each step
took, and the commands to continue with. The page links its images and the interactive map by
relative paths, so the folder can be moved or zipped as a whole; it needs no network.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any

from geobind._version import __version__

__all__ = ["METRIC_COLUMNS", "write_report"]

#: the metric columns of the table, in order, with their headings
METRIC_COLUMNS = {
    "R@1": "R@1",
    "R@5": "R@5",
    "R@10": "R@10",
    "R@100": "R@100",
    "median_rank": "median rank",
    "gallery_size": "gallery",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "majority_rate": "majority rate",
    "match_rate": "match rate",
}

_RUNS = {
    "model": "trained model",
    "untrained": "untrained (CLIP-initialised)",
    "random": "random embeddings",
}

_STYLE = """
body {font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329;
  margin: 0 auto; max-width: 1120px; padding: 24px 28px 60px}
h1 {font-size: 28px; margin: 0 0 4px} h2 {font-size: 20px; margin: 34px 0 10px;
  border-bottom: 1px solid #d7dce1; padding-bottom: 4px}
.lead {color: #4a5560; margin-top: 0} .note {color: #6a737d; font-size: 13px}
table {border-collapse: collapse; margin: 8px 0; font-size: 14px}
th, td {padding: 4px 10px; border-bottom: 1px solid #e3e7eb; text-align: right}
th:first-child, td:first-child, th.l, td.l {text-align: left}
thead th {background: #f3f5f7; font-weight: 600}
tr.model td {font-weight: 600; background: #fbf7ec}
td.task {font-weight: 600; background: #fff; vertical-align: top; max-width: 210px}
.maps {display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 16px}
figure {margin: 0; border: 1px solid #e3e7eb; border-radius: 6px; padding: 8px; background: #fff}
figure img {width: 100%; height: auto; display: block}
figcaption {font-size: 13px; color: #4a5560; margin-top: 4px}
iframe {width: 100%; height: 560px; border: 1px solid #d7dce1; border-radius: 6px}
pre {background: #f3f5f7; padding: 10px 12px; border-radius: 6px; overflow-x: auto;
  font-size: 13px}
code {font-size: 13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str | os.PathLike[str], root: Path) -> str:
    """``path`` relative to the report's folder, as a URL path."""
    target = Path(path)
    target = target if target.is_absolute() else Path.cwd() / target
    return Path(os.path.relpath(target.resolve(), root.resolve())).as_posix()


def _number(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if key in ("median_rank", "gallery_size") and isinstance(value, int | float):
        return f"{value:.0f}"
    return f"{value:.3f}" if isinstance(value, float) else _e(value)


def _metrics_table(metrics: dict[str, Any]) -> str:
    """Rows per task and run (model first, then its baselines), one column per metric found."""
    rows = []
    for task, runs in metrics.items():
        if not isinstance(runs, dict):
            continue
        for run, values in runs.items():
            if isinstance(values, dict):
                rows.append((task, run, values))
    if not rows:
        return '<p class="note">No metrics were recorded.</p>'
    columns = [c for c in METRIC_COLUMNS if any(c in v for _, _, v in rows)]
    head = "".join(f"<th>{_e(METRIC_COLUMNS[c])}</th>" for c in columns)
    body = []
    for i, (task, run, values) in enumerate(rows):
        cells = "".join(f"<td>{_number(c, values.get(c, ''))}</td>" for c in columns)
        css = ' class="model"' if run == "model" else ""
        label = _RUNS.get(run, run)
        first = i == 0 or rows[i - 1][0] != task
        span = sum(1 for t, _, _ in rows if t == task)
        head_cell = f'<td class="task" rowspan="{span}">{_e(task)}</td>' if first else ""
        body.append(f'<tr{css}>{head_cell}<td class="l">{_e(label)}</td>{cells}</tr>')
    return (
        f'<table class="metrics"><thead><tr><th>task</th><th class="l">run</th>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table>"
    )


def _queries(result: Any, root: Path) -> str:
    if not result.queries:
        return '<p class="note">No query was mapped.</p>'
    rows, figures = [], []
    for q in result.queries:
        rows.append(
            f'<tr><td>{_e(q["query"])}</td><td class="l">{_e(q["kind"])}</td>'
            f'<td class="l">{_e(q["class"])}</td><td>{q["auroc"]:.3f}</td></tr>'
        )
        caption = f"{_e(q['query'])} — AUROC {q['auroc']:.3f} against the {_e(q['class'])} truth"
        links = f'<a href="{_e(_href(q["cog"], root))}">GeoTIFF</a>' if q.get("cog") else ""
        figures.append(
            f'<figure><img src="{_e(_href(q["png"], root))}" alt="{_e(q["query"])}" '
            f'loading="lazy"><figcaption>{caption} · {links}</figcaption></figure>'
        )
    table = (
        '<table class="queries"><thead><tr><th>query</th><th class="l">kind</th>'
        '<th class="l">land cover</th><th>AUROC</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return table + f'<div class="maps">{"".join(figures)}</div>'


def _timings(result: Any) -> str:
    rows, total, total_then = [], 0.0, 0.0
    recorded = getattr(result, "recorded_seconds", {}) or {}
    for step, seconds in result.seconds.items():
        reused = step in result.reused
        first = recorded.get(step)
        total += seconds
        total_then += first or 0.0
        now = "reused" if reused else f"{seconds:.1f} s"
        then = f"{first:.1f} s" if first is not None else "–"
        rows.append(f"<tr><td>{_e(step)}</td><td>{now}</td><td>{then}</td></tr>")
    return (
        '<table class="timings"><thead><tr><th>step</th><th>this run</th>'
        "<th>when it was computed</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody><tfoot><tr><th>total</th><th>{total:.1f} s</th>"
        f"<th>{total_then:.1f} s</th></tr></tfoot></table>"
    )


def write_report(result: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the demo's report page (default ``<result.out>/report.html``) and return its path.

    Args:
        result: the :class:`~geobind.demo.DemoResult` of a run.
        path: where to write; links inside are relative to its folder.

    Example:
        >>> from geobind.demo import DemoResult
        >>> out = getfixture("tmp_path")
        >>> result = DemoResult(out, out / "model", out / "scene.zarr", "gamma",
        ...     {"sat→ground": {"model": {"R@10": 0.2, "gallery_size": 50},
        ...                     "random": {"R@10": 0.1, "gallery_size": 50}}}, [],
        ...     seconds={"world": 3.0})
        >>> page = write_report(result).read_text()
        >>> "sat→ground" in page and "random embeddings" in page
        True
    """
    root = Path(result.out)
    target = Path(path) if path is not None else root / "report.html"
    explore = getattr(result, "explore", None)
    interactive = ""
    if explore is not None and Path(explore).exists():
        href = _e(_href(explore, target.parent))
        interactive = (
            f"<p>Pan, zoom and click the best cells (rank and score); switch queries in the "
            f'layer control. Open it alone: <a href="{href}">{href}</a>.</p>'
            f'<iframe src="{href}" title="interactive similarity maps"></iframe>'
        )
    model, store = _e(result.model), _e(result.store)
    continue_with = "\n".join(
        [
            "jupyter lab examples/quickstart.ipynb",
            f'geobind query {result.store} "a sandy beach" -o beach.html --tiles none',
            f'geobind query {result.store} "a sandy beach" -o beach.tif --png',
            f"geobind embed YOUR.tif -o yours.zarr --model {result.model}",
            f"geobind eval {result.model} --data {root / 'world'}",
        ]
    )
    preset = getattr(result, "preset", None)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>geobind demo report</title><style>{_STYLE}</style></head>
<body>
<h1>geobind demo</h1>
<p class="lead">GeoBind trained end to end on the synthetic world{
        f" (preset {_e(preset)})" if preset else ""
    }: a small CLIP stand-in, stage 1 (satellite ← ground photos) and stage 2 (audio ← satellite),
evaluated on held-out points and mapped over the held-out scene {_e(repr(result.scene))}.
geobind {_e(__version__)}, {stamp}.</p>
<p class="note">The CLIP here is the offline stand-in for real CLIP weights (pretrained on the
world's photo–caption pairs), so the numbers show the method working, not the paper's figures.
Model: <code>{model}</code>; embeddings: <code>{store}</code>.</p>

<h2>Metrics on held-out test points</h2>
<p class="note">R@k: the share of queries whose true match ranks among the first k of the gallery
(gallery size beside it). The baselines are computed in the same run: random embeddings and the
untrained, CLIP-initialised encoder.</p>
{_metrics_table(result.metrics)}

<h2>Similarity maps over the held-out scene</h2>
{interactive}
<p class="note">AUROC: how well each map separates the cells of the query's land-cover class from
the rest (0.5 is chance).</p>
{_queries(result, target.parent)}

<h2>Time per step</h2>
<p class="note">Steps whose inputs did not change are reused from the last run.</p>
{_timings(result)}

<h2>How to continue</h2>
<pre>{_e(continue_with)}</pre>
<p class="note">With real weights and data the same commands run the paper's setting: see the
README.</p>
</body></html>
"""
    target.write_text(page, encoding="utf-8")
    return target
