"""The HTML report (`advlab report RUN_DIR`): html.py finds a run directory's artefacts by their names
(advlab.artifacts.names) and renders them with the figures of advlab.plotting. It imports nothing from
this package but the templates, so `import advlab.report.html` and `import advlab.report` work in
either order."""

from .html import build_report, collect, render

__all__ = ["build_report", "collect", "render"]
