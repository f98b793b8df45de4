"""The report in a real browser: headless Chromium renders it, every image decodes, no console errors,
and the epsilon slider changes the displayed images. Skipped when chromium is not installed.

Pure stdlib: a probe script is put at the top of a copy of the report; it records errors and console
messages from the first moment, and after `load` checks the images, drives each slider and writes the
findings as JSON into the page, which `chromium --dump-dom` prints.
"""

import json
import re
import shutil
import subprocess

import pytest

from advlab.cli import main

from report_run import report_run_dir  # noqa: F401  (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# slow: the shared quick-demo fixture takes 15-40 s; one xdist group so it is made once per `make test`.
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
              pytest.mark.slow, pytest.mark.xdist_group("report")]

PROBE = """<script>
(function () {
  var errors = [], logs = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window && t.tagName ? "failed to load " + t.tagName + " " + (t.src || t.href || "").slice(0, 60)
                                               : String(e.message));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () { logs.push(level + ": " + Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments); };
  });
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var result = {images: imgs.length, broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return i.alt; }), sliders: []};
    document.querySelectorAll("[data-slider]").forEach(function (box) {
      var range = box.querySelector("input[type=range]"), img = box.querySelector(".tiles img");
      var caption = box.querySelector(".tiles figcaption"), label = box.querySelector(".eps-label");
      var before = {src: img.src, caption: caption.textContent, label: label.textContent};
      range.value = range.max;
      range.dispatchEvent(new Event("input", {bubbles: true}));
      var after = {src: img.src, caption: caption.textContent, label: label.textContent};
      result.sliders.push({max: range.max, before: before.label, after: after.label, caption: after.caption,
                           src_changed: before.src !== after.src, decoded: img.naturalWidth > 0,
                           frames: JSON.parse(box.querySelector(".slider-data").textContent).length});
    });
    setTimeout(function () {  // a changed src decodes asynchronously
      result.after_slide_decoded = Array.prototype.every.call(document.querySelectorAll(".tiles img"),
                                                              function (i) { return i.naturalWidth > 0; });
      result.errors = errors;
      result.logs = logs;
      var pre = document.createElement("pre");
      pre.id = "probe-result";
      pre.textContent = JSON.stringify(result);
      document.body.appendChild(pre);
    }, 200);
  });
})();
</script>"""


def chromium(*args, timeout=90):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(report_run_dir):  # noqa: F811
    path = report_run_dir / "report.html"  # written by the demo
    if not path.is_file():
        assert main(["report", str(report_run_dir)]) == 0
    return path


def test_report_renders_in_chromium(report, tmp_path):
    html = report.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>\n" + PROBE, 1))
    out = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', out.stdout, re.S)
    assert found, f"the probe did not report; chromium stderr:\n{out.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
                        .replace("&quot;", '"'))
    assert result["images"] >= 10
    assert result["broken"] == []
    assert result["errors"] == [] and result["logs"] == []
    uncaught = [line for line in out.stderr.splitlines() if "CONSOLE" in line and "probed.html" in line]
    assert uncaught == []
    assert result["sliders"], "the report has an epsilon slider"
    for s in result["sliders"]:
        assert s["frames"] == int(s["max"]) + 1 >= 2
        assert s["src_changed"], "moving the slider must change the displayed image"
        assert s["before"] == "eps 0" and s["after"] == "eps 0.2"
        assert "→" in s["caption"]
    assert result["after_slide_decoded"]


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file()
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and figures, not an empty page
    # most of the page is white background, but a sizeable share is drawn on
    hist = img.histogram()
    assert sum(hist[:200]) > 0.02 * img.size[0] * img.size[1]
