"""The report's plots, as a person sees them: headless Chromium loads the page and finds every plot, drawn.

CI installs Chromium (`make browser`, run by .ci/run); elsewhere the test is skipped, with the reason, when no
Chromium binary is on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import mmdata
from mmdata.quality.dedup import DedupOptions, dedup
from mmdata.report.page import write_report
from mmdata.testing.llava import World
from tests.quality.conftest import Built

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# Appended to a copy of the page: after layout, list each plot with the size its SVG is drawn at.
PROBE = """<script>
document.body.dataset.plots = [...document.querySelectorAll('figure.plot')].map(f => {
  const svg = f.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const marks = svg ? svg.querySelectorAll('path, rect, use, text').length : 0;
  return `${f.id}:${Math.round(box.width)}x${Math.round(box.height)}:${marks}`;
}).join(' ');
</script>"""


def rendered_plots(page: Path, tmp_path: Path) -> dict[str, tuple[int, int, int]]:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: .ci/run installs it with `make browser`")
        pytest.skip("no chromium on PATH (install it with `make browser`, as CI does)")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"
    out = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-plots="([^"]*)"', out)
    assert found, out[:2000]
    plots = {}
    for item in found.group(1).split():
        pid, size, marks = item.split(":")
        w, h = size.split("x")
        plots[pid] = (int(w), int(h), int(marks))
    return plots


def test_every_plot_of_a_dataset_report_is_drawn(built: Built, llava_world: World, tmp_path: Path) -> None:
    from builders.cambrian import CambrianOptions
    from mmdata.build.driver import BuildSettings, build

    build("cambrian", CambrianOptions(input=[llava_world.jsonl], media_root=llava_world.media_root),
          BuildSettings(out=tmp_path / "ds"))
    page = write_report(mmdata.open(tmp_path / "ds"), tmp_path / "r.html", n=2)
    plots = rendered_plots(page, tmp_path)
    assert set(plots) == {f"plot-{p}" for p in ("tasks", "sources", "text-length", "media-per-record", "image-size",
                                                "reject-reasons")}
    assert all(w > 200 and h > 80 and marks > 5 for w, h, marks in plots.values()), plots


def test_a_view_report_plots_its_removal_reasons(built: Built, tmp_path: Path) -> None:
    dedup([built.a, built.b], tmp_path / "v", DedupOptions(cache=built.cache))
    page = write_report(mmdata.open(tmp_path / "v"), tmp_path / "v.html", n=2)
    text = page.read_text()
    assert "dedup view" in text and "b: identical text + near-identical images" in text
    plots = rendered_plots(page, tmp_path)
    assert "plot-removal-reasons" in plots and len(plots) == 6
    assert all(w > 200 and h > 80 and marks > 5 for w, h, marks in plots.values()), plots
