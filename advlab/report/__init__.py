"""The HTML report (`advlab report RUN_DIR`): find.py finds and reads a run directory's records by their
names (advlab.rundir), entries.py turns them into the template's context entries with the
figures of advlab.plotting, and html.py gathers those entries, renders templates/report.html.j2 and
writes the file. html imports entries and find, entries imports find, and none of them imports this
package itself, so `import advlab.report.html` and `import advlab.report` work in either order."""

from .html import build_report, collect, render, sections, write_report

__all__ = ["build_report", "collect", "render", "sections", "write_report"]
