"""Garbage-collector settings for the service's long-running processes (the API and the workers).

A chunk of 1000 records is tens of thousands of short-lived Python objects. With CPython's default thresholds
they set off hundreds of collections per chunk, and the older generations hold everything the process built at
start (modules, ORM mappers, compiled-statement caches, pydantic schemas), which each full collection walks
again. Measured on a worker applying 1000-record chunks: 24 µs of CPU per record with the defaults, 15 with the
settings below, as with the collector off.
"""

from __future__ import annotations

import gc

# Young objects collected every 50 000 allocations instead of 700; the older generations as usual after that.
THRESHOLDS = (50_000, 20, 20)


def tune_collector() -> None:
    """Exempt what the process has built so far from collection, and collect the young generation less often.

    Call once the process is set up (after imports and, in a forked worker, in the child): objects alive now are
    moved to the permanent generation, which no collection walks; reference cycles made later are still freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
