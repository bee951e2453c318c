"""Evaluation of trained models: cross-validation comparison, boundary metrics, statistics, plots."""
