"""Side-by-side benchmarks against raw redis-py; run with ``python -m benchmarks``."""
