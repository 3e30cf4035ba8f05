"""asv benchmarks of fastxent; see asv.conf.json at the repository root."""
