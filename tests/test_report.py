"""`labelfix stats --html`: a self-contained report whose numbers are those of `stats --json`."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main

from conftest import save_png


class Report(HTMLParser):
    """What the tests read back: cards by id, table cells (text and data-sort), images, links."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: dict[str, str] = {}
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self.stats_json = ""
        self._table: str | None = None
        self._cell: list | None = None
        self._in_json = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") and "data-value" in a:
            self.cards[a["id"]] = a["data-value"]
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = ["", a.get("data-sort")]
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "script" and a.get("id") == "labelfix-stats":
            self._in_json = True
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "link":
            self.external.append(str(a))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._in_json = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._in_json:
            self.stats_json += data

    def rows(self, table: str) -> list[list[tuple[str, str | None]]]:
        return [row for row in self.tables[table] if row]


def run_stats(masks, tmp_path, *extra):
    out = tmp_path / "report.html"
    args = ["stats", str(masks), "--ignore", "255", "--json", "--html", str(out), *extra]
    result = CliRunner().invoke(main, args)
    return result, out


def test_report_numbers_equal_stats_json(clean_masks, tmp_path):
    result, out = run_stats(clean_masks, tmp_path, "-n", "21")
    assert result.exit_code == 0, result.output
    expected = json.loads(result.stdout)  # stdout stays pure JSON; the report is logged on stderr
    assert f"labelfix: wrote {out}" in result.stderr
    report = Report(out.read_text(encoding="utf-8"))

    assert int(report.cards["files"]) == expected["files"] == 4
    assert int(report.cards["label-files"]) == expected["label_files"]
    assert int(report.cards["total-pixels"]) == expected["total_pixels"] == 320
    assert int(report.cards["void-pixels"]) == expected["void"]["pixels"] == 25
    assert float(report.cards["void-share"]) == expected["void"]["share"] == 25 / 320

    values = report.rows("values-table")
    got = [
        (int(row[0][0]), int(row[3][1]), float(row[4][1]), int(row[5][1]), row[2][0])
        for row in values
    ]
    want = [
        (v["value"], v["pixels"], v["share"], v["images"], v["role"]) for v in expected["values"]
    ]
    assert got == want
    assert [row[4][0] for row in values][-1] == "7.81%"  # the share as `stats` prints it

    kinds = {row[0][0]: int(row[1][1]) for row in report.rows("storage-table")}
    assert kinds == {k["kind"]: k["files"] for k in expected["kinds"]}

    per_image = report.rows("per-image-table")
    assert [row[0][0] for row in per_image] == [
        "a/0001.png",
        "a/0002.png",
        "b/0003.png",
        "b/0004.npy",
    ]
    assert [int(row[4][1]) for row in per_image] == [14, 0, 10, 1]  # void px per mask
    assert json.loads(report.stats_json) == expected

    assert report.external == []
    assert report.images and all(s.startswith("data:image/png;base64,") for s in report.images)
    assert "<script src" not in out.read_text()


def test_report_shows_problems_and_worst_masks_first(messy_masks, tmp_path):
    result, out = run_stats(messy_masks, tmp_path, "-n", "21")
    assert result.exit_code == 1  # unreadable files, as plain `stats`
    text = out.read_text()
    report = Report(text)
    assert "value <b>37</b> is not a class id (expected 0..20 or ignore 255) in 1 file(s)" in text
    assert "unreadable: " in text and "truncated.png" in text
    assert "entirely void: " in text
    # the worst thumbnails come first: the mask with value 37, then the one with 300
    worst = text[text.index('id="worst"') :]
    assert worst.index("out_of_range.png") < worst.index("sixteen.png") < worst.index("good.png")
    rows = {row[0][0]: row for row in report.rows("per-image-table")}
    assert int(rows["out_of_range.png"][6][1]) == 2
    assert rows["out_of_range.png"][7][0] == "37"
    assert rows["empty.png"][8][0] == "empty file"


def test_html_needs_matplotlib(clean_masks, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    result, out = run_stats(clean_masks, tmp_path)
    assert result.exit_code == 1
    assert (
        result.stderr == "labelfix: error: --html needs matplotlib: pip install 'labelfix[viz]'\n"
    )
    assert not out.exists()


def test_html_needs_the_local_runner(clean_masks, tmp_path):
    result, _ = run_stats(clean_masks, tmp_path, "--runner", "beam")
    assert result.exit_code == 2
    assert "--html needs --runner local" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_a_headless_browser(clean_masks, tmp_path):
    bad = np.zeros((8, 10), np.uint8)
    bad[2:5, 2:6] = 37
    save_png(clean_masks / "c" / "0005.png", bad)
    result, out = run_stats(clean_masks, tmp_path, "-n", "21")
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", out)
    assert shot.exists(), proc.stderr.decode()[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (2000, 1200, 3)
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    assert len(np.unique(packed)) > 50  # text, chart bars, thumbnails: not a blank page
    assert (pixels != 255).any(axis=2).mean() > 0.02
    assert ((pixels == (255, 0, 255)).all(axis=2)).sum() > 20  # the bad value's thumbnail

    # a click on a header sorts the per-image table by that column (twice: descending)
    clicked = tmp_path / "clicked.html"
    clicked.write_text(out.read_text().replace("</body></html>", CLICK_VOID_TWICE))
    dom = chromium(tmp_path, "--dump-dom", clicked).stdout.decode()
    # void shares: a/0001 14/80, b/0003 10/80, b/0004 1/80, a/0002 and c/0005 none
    assert 'data-sorted="desc a/0001.png b/0003.png b/0004.npy"' in dom


CLICK_VOID_TWICE = """<script>
var th = document.querySelectorAll("#per-image-table th")[5];
th.click(); th.click();
var cells = document.querySelectorAll("#per-image-table tbody tr td:first-child");
var first = Array.prototype.slice.call(cells, 0, 3).map(function (c) { return c.textContent; });
document.body.setAttribute("data-sorted", th.dataset.dir + " " + first.join(" "));
</script></body></html>"""


def chromium(tmp_path, *args):
    """Run headless Chromium on a local file (the last argument)."""
    *flags, page = args
    return subprocess.run(
        [
            shutil.which("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            *flags,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
