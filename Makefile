# Developer shortcuts, run with the project's virtualenv (override with PYTHON=...).
PYTHON ?= .venv/bin/python

.PHONY: bench bench-scale bench-hotpath chaos abuse console-bench console-screenshots lock

# The performance benchmark (benchmarks/bench.py, about 3 minutes): the service end to end beside PostgreSQL's own
# ceilings, single sync beside a bare FastAPI + psycopg peer, and during another business's batch (docs/performance.md).
bench:
	$(PYTHON) -m benchmarks.bench

# The scale curve (benchmarks/scale.py, about 10 minutes): a batch and single sync as the customers table grows to
# 1 M and 5 M rows, and records/s against batch size. 10 M rows too: make bench-scale MAX_ROWS=10000000.
MAX_ROWS ?= 5000000
bench-scale:
	$(PYTHON) -m benchmarks.bench --scale --max-rows $(MAX_ROWS)

# The pieces of a chunk's work one at a time, each beside what it replaced (benchmarks/hotpath.py, about 30 s).
bench-hotpath:
	$(PYTHON) -m benchmarks.hotpath

# The chaos drill: a 30 000-record job through pfsync api/worker/scheduler on a scratch PostgreSQL and Redis while
# workers are killed, Redis is flushed and restarted and PostgreSQL restarts (docs/reliability.md).
chaos:
	$(PYTHON) -m benchmarks.chaos

# The abuse drill: a hostile partner's slow, stalled, deep, huge and malformed requests through the same processes
# while a second partner keeps syncing; no 5xx, and the bystander unhindered (docs/reliability.md).
abuse:
	$(PYTHON) -m benchmarks.abuse

# The console's benchmark: every page of /console/ timed with 10 000 jobs and 1 000 000 results stored
# (benchmarks/console.py, docs/performance.md).
console-bench:
	$(PYTHON) -m benchmarks.console

# The same data, then the README's screenshots of the console: docs/console-overview.png and docs/console-job.png.
console-screenshots:
	$(PYTHON) -m benchmarks.console --repeat 3 --screenshots docs

# The lock files, after a change to pyproject.toml's dependencies: the runtime's plus the dev tools' (run.py and CI
# install it), then the runtime's alone (the image installs it), held to the same pins. Upgrade every pin: make lock UPGRADE=1.
LOCK_FLAGS = --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	$(if $(UPGRADE),--upgrade)
lock:
	$(PYTHON) -m piptools compile $(LOCK_FLAGS) --extra dev -o requirements-dev.lock pyproject.toml
	$(PYTHON) -m piptools compile $(LOCK_FLAGS) -c requirements-dev.lock -o requirements.lock pyproject.toml
