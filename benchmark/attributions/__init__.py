"""Attribution methods: one file per method, registered in aft_bench.core.registries."""
