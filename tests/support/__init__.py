"""Helpers shared by the tests and the benchmarks (not test modules): data builders, servers, CLI runs."""
