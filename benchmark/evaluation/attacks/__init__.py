"""Adversarial attacks for robustness evaluation (paper Table 2 / Table 9)."""
