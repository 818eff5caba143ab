"""write_report and the HTML helpers."""

import json

from matplotlib.figure import Figure

from dnninfer.report import ReportSection, default_section, figure_html, table_html, write_report


def _png(path):
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    fig.savefig(path)
    return path


def test_table_html_escapes_and_formats():
    out = table_html([{"name": "<b>x</b>", "ms": 1.234567}, {"name": "y", "extra": None}])
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>x" not in out
    assert "1.235" in out and "<th>extra</th>" in out


def test_write_report_has_toc_table_image_and_round_tripping_json(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    img = _png(elsewhere / "plot.png")
    outdir = tmp_path / "report"
    result = {"system": "sys-a", "quick": True, "paper": {"speedup": 2.0}, "ours": {"speedup": 1.8},
              "rows": [{"case": "a", "ms": 1.5}], "env": {"python": "3"}}  # fmt: skip
    results = {"sys-a": result}
    section = ReportSection("sys-a", table_html(results["sys-a"]["rows"]) + figure_html(img, "a plot"), [img])
    core = [ReportSection("Model zoo", "<p>zoo</p>")]
    index = write_report(outdir, results, [section], core)
    page = index.read_text()
    assert index == outdir / "index.html"
    assert "<table>" in page and '<img src="plot.png"' in page
    assert (outdir / "plot.png").is_file()  # copied next to index.html
    assert page.index("Model zoo") < page.index('id="sys-a"')  # core sections come first
    assert '<a href="#model-zoo">' in page and '<a href="#sys-a">' in page
    assert json.loads((outdir / "results.json").read_text()) == results


def test_default_section_puts_paper_and_ours_side_by_side(tmp_path):
    result = {"system": "sys-b", "paper": {"speedup": 2.0, "source": "Table 3"},
              "ours": {"speedup": 1.5}, "rows": [{"case": "x", "speedup": 1.5}]}  # fmt: skip
    section = default_section(result, tmp_path)
    assert section.title == "sys-b"
    assert "<th>figure</th><th>paper</th><th>ours</th>" in section.html and "Table 3" in section.html
    assert len(section.images) == 1 and section.images[0].is_file()
    assert section.images[0].name in section.html


def test_default_section_without_numbers_makes_no_plot(tmp_path):
    section = default_section({"system": "s", "paper": {"source": "x"}, "ours": {}, "rows": []}, tmp_path)
    assert section.images == []
    assert "(no rows)" in section.html
