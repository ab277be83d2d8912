"""The AFT / FARE trainer (paper sections 3.1-3.2, appendix A.2-A.3)."""
