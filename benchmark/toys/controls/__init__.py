"""Controls for the methods and metrics: encoders whose right answer is known by construction."""
