"""The run report: static HTML (no server), PNG plots, per-latent data loaded on demand.
Data gathering (``data``), plots (``plots``) and HTML (``html``) are separate modules."""

from autointerp.report.build import build_report

__all__ = ["build_report"]
