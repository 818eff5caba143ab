"""The HTML report: one self-contained ``index.html`` plus PNGs and ``results.json``.

No template engine and no JavaScript: a page of sections with a table of contents, so the report
opens anywhere and diffs cleanly. Section fragments are trusted HTML; every value that comes from
a result goes through ``table_html``/``html.escape``.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report runs on servers and in CI

from dnninfer.bench.output import column_names, format_cell, to_jsonable
from dnninfer.report.section import ReportSection

__all__ = [
    "MAX_TABLE_ROWS",
    "default_section",
    "error_section",
    "figure_html",
    "slugify",
    "table_html",
    "write_report",
]

MAX_TABLE_ROWS = 200

_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#fff; --alt:#f6f8fa; --accent:#0969da;
        --bad:#cf222e; --good:#1a7f37; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 2rem 1.5rem 4rem; }
h1 { margin: 0 0 .25rem; font-size: 1.9rem; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: .3rem; margin-top: 2.5rem; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.meta { color: var(--muted); margin: 0; }
nav.toc { background: var(--alt); border: 1px solid var(--line); border-radius: 6px;
          padding: .5rem 1.25rem; margin: 1.5rem 0; }
nav.toc h2 { border: 0; margin: .5rem 0; font-size: 1.1rem; }
nav.toc ol { margin: 0 0 .5rem; padding-left: 1.25rem; }
table { border-collapse: collapse; margin: .75rem 0; font-size: .9rem; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left; white-space: nowrap; }
th { background: var(--alt); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .3rem; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.side-by-side > div { flex: 1 1 320px; min-width: 0; }
.status-ok { color: var(--good); font-weight: 600; } .status-error { color: var(--bad); font-weight: 600; }
pre.error { background: #fff5f5; border: 1px solid #ffcecb; border-radius: 6px; padding: .75rem;
            overflow-x: auto; font-size: .8rem; white-space: pre-wrap; }
.note { color: var(--muted); font-size: .85rem; }
td.verdict-met { color: var(--good); font-weight: 600; } td.verdict-short, td.verdict-failed { color: var(--bad);
  font-weight: 600; } td.verdict-not-measured, td.verdict-no-target { color: var(--muted); }
table.scoreboard td { white-space: normal; } table.scoreboard td:first-child { white-space: nowrap; }
"""

_ENV_KEYS = (
    "python", "torch", "numpy", "platform", "cpu_model", "cpu_count", "cpu_affinity",
    "torch_threads", "loadavg", "git_commit", "git_dirty", "timestamp",
)  # fmt: skip


_SCOREBOARD_NOTE = (
    '<p class="note">One line per system: the paper\'s headline figure, ours, whether we meet it, and whether ours '
    "was measured by execution here or predicted by our own model (a predicted figure says nothing about "
    "execution). Each system's section has its full paper-vs-ours table.</p>"
)


def slugify(text: str) -> str:
    """An HTML id from a title: lower-case ASCII words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_html(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    max_rows: int | None = MAX_TABLE_ROWS,
) -> str:
    """An escaped HTML table of records; columns default to the union of keys, in order seen."""
    cols = list(columns) if columns is not None else column_names(rows)
    if not rows or not cols:
        return '<p class="note">(no rows)</p>'
    shown = rows if max_rows is None else rows[:max_rows]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for row in shown:
        cells = []
        for col in cols:
            value = row.get(col)
            cls = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{cls}>{html.escape(format_cell(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    out = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if len(shown) < len(rows):
        out += f'<p class="note">First {len(shown)} of {len(rows)} rows; all are in results.json.</p>'
    return out


def figure_html(path: Path | str, caption: str, *, base: Path | None = None) -> str:
    """An ``<img>`` with caption, its ``src`` relative to the report folder.

    With ``base`` (the report folder) a file under it keeps its sub-path; otherwise the file
    name is used, matching where ``write_report`` copies images from elsewhere.
    """
    p = Path(path)
    src = p.name
    if base is not None:
        try:
            src = p.resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            src = p.name
    elif not p.is_absolute():
        src = p.as_posix()
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="{html.escape(src, quote=True)}" alt="{alt}" loading="lazy">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _metric_rows(paper: Mapping[str, Any], ours: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = list(dict.fromkeys([*paper, *ours]))
    return [{"figure": k, "paper": paper.get(k), "ours": ours.get(k)} for k in keys]


def _ratio_plot(system: str, paper: Mapping[str, Any], ours: Mapping[str, Any], outdir: Path) -> Path | None:
    """Bar chart of ours / paper for figures both report as numbers (paper = 1)."""
    common = [
        k for k in paper if _is_number(paper[k]) and paper[k] != 0 and _is_number(ours.get(k))
    ]  # fmt: skip
    if not common:
        return None
    from matplotlib.figure import Figure  # lazy: importing the registry should stay fast

    rel = [ours[k] / paper[k] for k in common]
    fig = Figure(figsize=(max(4.0, 1.1 * len(common) + 2.0), 3.2), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(common)), rel, width=0.6, color="#0969da")
    ax.bar_label(bars, fmt="%.2f", padding=2)
    ax.set_xlim(-0.75, len(common) - 0.25)
    ax.margins(y=0.15)
    ax.axhline(1.0, color="#59636e", linestyle="--", linewidth=1, label="paper")
    ax.set_xticks(range(len(common)), common, rotation=20, ha="right")
    ax.set_ylabel("ours / paper")
    ax.set_title(f"{system}: our figures relative to the paper's")
    ax.legend(loc="best")
    path = outdir / f"{slugify(system)}_paper_vs_ours.png"
    fig.savefig(path, dpi=110)
    return path


def default_section(result: Mapping[str, Any], outdir: Path) -> ReportSection:
    """Generic section for a system that registers none: its paper and our figures side by side
    (with a ratio plot where both are numbers), then the per-case rows."""
    system = str(result.get("system", "system"))
    paper = result.get("paper") or {}
    ours = result.get("ours") or {}
    outdir.mkdir(parents=True, exist_ok=True)
    figures = table_html(_metric_rows(paper, ours), ["figure", "paper", "ours"])
    images = []
    parts = ['<div class="side-by-side">', f"<div><h3>Paper vs ours</h3>{figures}</div>"]
    if (plot := _ratio_plot(system, paper, ours, outdir)) is not None:
        images.append(plot)
        caption = "Our headline figures divided by the paper's (dashed line: equal)."
        parts.append(f"<div>{figure_html(plot, caption, base=outdir)}</div>")
    parts.append("</div>")
    rows = result.get("rows") or []
    parts.append(f"<h3>Rows ({len(rows)})</h3>{table_html(rows)}")
    return ReportSection(title=system, html="\n".join(parts), images=images)


def error_section(title: str, error: str, *, system: str | None = None) -> ReportSection:
    """A section that shows what failed, so a broken bench is visible rather than missing."""
    return ReportSection(
        title=title,
        html=f'<p class="status-error">Failed.</p><pre class="error">{html.escape(error)}</pre>',
        system=system,
    )


def _place_images(sections: Sequence[ReportSection], outdir: Path) -> None:
    root = outdir.resolve()
    for section in sections:
        for image in section.images:
            src = Path(image)
            if not src.is_file():
                continue
            try:
                src.resolve().relative_to(root)
            except ValueError:
                shutil.copy2(src, outdir / src.name)


def _summary_html(results: Mapping[str, Mapping[str, Any]], ids: Mapping[str, str]) -> str:
    rows = []
    for name, res in results.items():
        failed = "error" in res
        status = "error" if failed else "ok"
        link = f'<a href="#{ids[name]}">{html.escape(name)}</a>' if name in ids else html.escape(name)
        wall = (res.get("env") or {}).get("bench_wall_s")
        rows.append(
            f"<tr><td>{link}</td><td class='status-{status}'>{status}</td>"
            f"<td>{html.escape(format_cell(res.get('quick')))}</td>"
            f"<td class='num'>{html.escape(format_cell(wall))}</td></tr>"
        )
    if not rows:
        return '<p class="note">No systems were run.</p>'
    head = "<tr><th>system</th><th>status</th><th>quick</th><th>bench wall s</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _env_html(results: Mapping[str, Mapping[str, Any]]) -> str:
    env = next((r["env"] for r in results.values() if isinstance(r.get("env"), Mapping)), None)
    if env is None:
        from dnninfer.env import capture_env

        env = capture_env()
    return table_html([{"key": k, "value": env.get(k)} for k in _ENV_KEYS if k in env])


def write_report(
    outdir: Path,
    results: Mapping[str, Mapping[str, Any]],
    sections: Sequence[ReportSection],
    core_sections: Sequence[ReportSection],
    scoreboard: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``index.html`` (core sections first, then systems) and ``results.json``; return
    the index path. Images outside ``outdir`` are copied in so relative links resolve.
    ``scoreboard`` rows (``report.scoreboard.scoreboard_rows``) open the page."""
    from dnninfer.report.scoreboard import scoreboard_html

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    all_sections = [*core_sections, *sections]
    _place_images(all_sections, outdir)

    data = to_jsonable(results)
    (outdir / "results.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    used = {"scoreboard", "summary", "environment"}
    ids = []
    for section in all_sections:
        sid, k = slugify(section.title), 2
        while sid in used:
            sid, k = f"{slugify(section.title)}-{k}", k + 1
        used.add(sid)
        ids.append(sid)
    system_ids: dict[str, str] = {}
    for s, sid in zip(sections, ids[len(core_sections) :], strict=True):
        system_ids.setdefault(s.system or s.title, sid)

    quick = any(bool(r.get("quick")) for r in results.values())
    failed = sum("error" in r for r in results.values())
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = ['<li><a href="#scoreboard">Scoreboard: paper claims</a></li>', '<li><a href="#summary">Summary</a></li>',
           '<li><a href="#environment">Environment</a></li>']
    toc += [f'<li><a href="#{sid}">{html.escape(s.title)}</a></li>' for s, sid in zip(all_sections, ids, strict=True)]
    board = scoreboard_html(list(scoreboard), system_ids)
    body = [
        f'<section id="scoreboard"><h2>Scoreboard: paper claims</h2>{_SCOREBOARD_NOTE}{board}</section>',
        f'<section id="summary"><h2>Summary</h2>{_summary_html(results, system_ids)}</section>',
        f'<section id="environment"><h2>Environment</h2>{_env_html(results)}</section>',
    ]
    body += [
        f'<section id="{sid}"><h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>'
        for s, sid in zip(all_sections, ids, strict=True)
    ]
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dnninfer report</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>dnninfer report</h1>
<p class="meta">Generated {stamp} · {"quick" if quick else "full"} run · {len(results)} system(s),
{failed} failed · raw data in <a href="results.json">results.json</a></p>
</header>
<nav class="toc"><h2>Contents</h2><ol>
{chr(10).join(toc)}
</ol></nav>
<main>
{chr(10).join(body)}
</main>
</body>
</html>
"""
    index = outdir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
