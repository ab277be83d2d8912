"""Reporting: figures and curves drawn from encoders and results (saliency grids, metric-against-card curves, the
LLaVA attention figure), above the tasks and below the applications."""
