"""lola.report: ``lola report``, what the experiments did (docs/reports.md)."""
