"""Training objectives, one file each, registered in ``aft_bench.core.registries.OBJECTIVES``."""
