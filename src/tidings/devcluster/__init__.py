"""A local cluster for development, tests and benchmarks: throwaway PostgreSQL, Redis and
HAProxy from Debian's packages, and several ``tidings serve`` nodes behind them."""
