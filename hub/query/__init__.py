"""Combining node answers to federated queries: totals, pooled statistics, tests (pure)."""
