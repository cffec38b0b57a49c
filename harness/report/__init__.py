"""Results → one self-contained HTML report (analysis, charts, templates, the `report` verb)."""
