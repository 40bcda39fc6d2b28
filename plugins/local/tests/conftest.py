"""Fixtures of the Local plugin's tests: clustercore.testing's, as a plugin author's would be."""

from clustercore.testing import fresh_cluster, ship_test_modules_by_value

__all__ = ["fresh_cluster", "ship_test_modules_by_value"]  # fixtures: pytest finds them here
