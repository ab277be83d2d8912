"""Datasets: the generated shapes world and loaders for real datasets on disk."""
