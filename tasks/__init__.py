"""Task runners, one file per task, each with a YAML config carrying ``metadata.version``."""
