"""Compute benchmark: parameters, MACs, step time, saved activations and peak memory per network."""
