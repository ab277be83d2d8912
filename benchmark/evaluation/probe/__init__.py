"""Linear probes on frozen image embeddings (paper section 4.1, Table 1 right half, Table 8): options, the probe,
and its training and cache."""
