"""Benchmarks comparing clustercore with its peers, reported as ratios.

Run ``python -m bench --help``. Every figure is measured in the same run as
the figures it is compared with; nothing here asserts on a timing.
"""
