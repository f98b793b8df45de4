"""Figures and the HTML report (`advlab report RUN_DIR`)."""

from .html import build_report, collect, render

__all__ = ["build_report", "collect", "render"]
