"""Compute benchmarks, cross-validation comparison, challenge submissions and model cards."""
