"""The agreement report (Markdown and self-contained HTML) and comparisons between checks."""
