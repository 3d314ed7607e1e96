"""report.html in a browser: headless Chromium (Debian's ``chromium``) lays the page out and nothing is wider
than the window or than the 960-px column: the widest report we write (all nine sets with the paper beside,
three checkpoints with long path names, the four confusion matrices) included.

Skipped, saying so, where no chromium binary is on PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from scoring.report import PAPER, write_report
from scoring.unibench import DATASETS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium): "
                                                         "the report's layout is not checked")
COLUMN = 960  # the body's max-width in report.html

# Written into a copy of the page: once the images have loaded, the page's and each image's geometry.
MEASURE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, body = document.body.getBoundingClientRect();
  const images = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {src: i.getAttribute("src"), natural: i.naturalWidth, left: r.left, right: r.right};
  });
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
                                    bodyLeft: body.left, bodyRight: body.right, images: images});
  document.body.appendChild(out);
});
</script>"""


def _widest_scores() -> dict:
    """A scores.json as `benchmark` writes it (real MER-UniBench folders: the paper column), at its widest."""
    names = list(DATASETS)
    models = [f"/data/runs/affectgpt-mercaptionplus-{tag}/checkpoints/checkpoint_{epoch:06d}_loss_0.512"
              for tag, epoch in (("face", 30), ("face-seed1", 45), ("frame-bf16-lr2e-5", 60))]
    per_model = {}
    for k, m in enumerate(models):
        per_model[m] = {"datasets": {}, "mean": 0.5}
        for d in names:
            result = {"score": 0.4 + 0.05 * k, "metric": DATASETS[d].metric,
                      "labeling": {"n": 40, "failed": 0, "unparsed": 0}}
            if DATASETS[d].metric == "hit_rate":
                gold = list(DATASETS[d].label_names or ("neutral", "angry", "happy", "sad", "worried", "surprise"))
                pred = gold + ["other"]
                result["confusion"] = {"gold": gold, "pred": pred, "rule": "first predicted label",
                                       "matrix": [[(i + j) % 3 for j in range(len(pred))] for i in range(len(gold))]}
            per_model[m]["datasets"][d] = result
    best = {d: {"checkpoint": models[-1], "epoch": 60, "score": 0.5} for d in names}
    return {"datasets": names, "model_order": models, "models": per_model, "best": best, "skipped": {},
            "synthetic": False, "sentiment": "llm", "extract": "llm", "mean": {"best": 0.5, "paper": 0.75},
            "paper": {d: PAPER[d] / 100 for d in names}, "task": "ov", "question": "", "decoding": "greedy",
            "seed": 0, "batch_size": 8}


def _png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"  # the PNG signature, then IHDR
    return struct.unpack(">I", data[16:20])[0]


def _measure(page: Path, width: int, profile: Path) -> dict:
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--user-data-dir={profile}", f"--window-size={width},900", "--virtual-time-budget=10000",
                          "--dump-dom", measured.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="measure">(.*?)</pre>', run.stdout, re.S)
    assert found, f"chromium printed no measurement (exit {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_widest_report_fits_its_column_in_chromium(tmp_path):
    written = write_report(_widest_scores(), tmp_path)
    images = [p for k, p in written.items() if k not in ("markdown", "html")]
    assert len(images) == 5  # the bars and the four hit-rate sets' confusion matrices
    for png in images:  # drawn no wider than the column: shown at their own size on a wide screen
        assert _png_width(png) <= COLUMN, png.name
    for width in (1280, 640):
        m = _measure(written["html"], width, tmp_path / f"profile-{width}")
        assert len(m["images"]) == 5 and all(i["natural"] > 0 for i in m["images"]), m["images"]
        assert m["scrollWidth"] <= m["clientWidth"], (width, m)
        assert m["bodyRight"] - m["bodyLeft"] <= COLUMN
        for image in m["images"]:
            assert m["bodyLeft"] - 0.5 <= image["left"] and image["right"] <= m["bodyRight"] + 0.5, (width, image)
