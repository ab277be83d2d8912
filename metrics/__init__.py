"""Pure metric functions over maps and masks (no model code)."""
