# Developer shortcuts, run with the project's virtualenv (override with PYTHON=...).
PYTHON ?= .venv/bin/python

.PHONY: bench chaos

# The performance benchmark (benchmarks/bench.py).
bench:
	$(PYTHON) -m benchmarks.bench

# The chaos drill: a 30 000-record job through pfsync api/worker/scheduler on a scratch PostgreSQL and Redis while
# workers are killed, Redis is flushed and restarted and PostgreSQL restarts (docs/reliability.md).
chaos:
	$(PYTHON) -m benchmarks.chaos
