"""Jinja2 templates of the HTML report (a package so that wheels ship them)."""
