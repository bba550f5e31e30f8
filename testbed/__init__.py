"""Testbed: what RL adds on top of imitation learning."""
