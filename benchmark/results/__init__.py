"""Results: typed run results, run keys, per-sample stores with their locks and shard files, results folders and
leaderboard tables (the results layer, just above :mod:`aft_bench.core`)."""
