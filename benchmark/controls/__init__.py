"""Controls for the methods and metrics (issue 15): encoders whose right answer is known by construction."""
