"""Benchmarks, each measuring its own baseline in the same run: `python -m benchmarks.run [name ...]`."""
