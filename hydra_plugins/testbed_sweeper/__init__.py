"""The testbed's sweeper, defined here because Hydra instantiates plugins only from hydra_plugins."""

from testbed import sweep


class TestbedSweeper(sweep.Sweeper):
    """Hydra's basic sweeper plus variants, resume and a failure summary: see testbed/sweep.py."""
