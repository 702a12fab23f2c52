# Developer shortcuts, run with the project's virtualenv (override with PYTHON=...).
PYTHON ?= .venv/bin/python

.PHONY: bench chaos abuse

# The performance benchmark (benchmarks/bench.py).
bench:
	$(PYTHON) -m benchmarks.bench

# The chaos drill: a 30 000-record job through pfsync api/worker/scheduler on a scratch PostgreSQL and Redis while
# workers are killed, Redis is flushed and restarted and PostgreSQL restarts (docs/reliability.md).
chaos:
	$(PYTHON) -m benchmarks.chaos

# The abuse drill: a hostile partner's slow, stalled, deep, huge and malformed requests through the same processes
# while a second partner keeps syncing; no 5xx, and the bystander unhindered (docs/reliability.md).
abuse:
	$(PYTHON) -m benchmarks.abuse
