"""Benchmarking sub-networks: latency statistics, machine state, reports and Pareto plots."""
