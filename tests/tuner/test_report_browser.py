"""report.html renders in a real headless browser, every figure decoded.

Chromium loads the file with an inline script that, once the page has loaded, writes each
<img>'s naturalWidth into the DOM; ``--dump-dom`` then shows them. A broken base64 image has a
naturalWidth of 0. Skipped without chromium unless ROOFTUNE_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from tuner_helpers import SMALL_PLAN, run_cli

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROBE = """<script>
window.addEventListener('load', function () {
  var sizes = Array.from(document.images).map(function (img) { return img.naturalWidth; });
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'IMAGES ' + sizes.length + ' WIDTHS ' + sizes.join(',');
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_with_its_images(chromium, tmp_path, capsys):
    out = tmp_path / "study"
    code, _, err = run_cli(capsys, *SMALL_PLAN, "--no-speculative", "--out", str(out))
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "src='http" not in html and 'src="http' not in html  # self-contained
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    profile = tmp_path / "profile"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    match = re.search(r"IMAGES (\d+) WIDTHS ([\d,]*)", result.stdout)
    assert match, result.stderr[-2000:]
    count, widths = int(match.group(1)), [int(w) for w in match.group(2).split(",") if w]
    assert count >= 5 and len(widths) == count
    assert all(w >= 300 for w in widths), widths

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=90,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 2000 and pixels[..., :3].std() > 0.05  # not a blank page
