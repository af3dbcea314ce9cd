"""Benchmarks: ``python -m bench [name ...] [options]`` runs ``bench/bench_<name>.py``."""
