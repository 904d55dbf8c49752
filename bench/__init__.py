"""Herald's benchmarks: `make bench` runs them (never `make test`); figures go to docs/benchmarks/ (index: docs/benchmarks.md)."""
