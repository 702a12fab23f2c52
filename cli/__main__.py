"""`python -m cli`: the same as the `pfsync` console script (used by `pfsync dev` to start its children)."""

from cli.main import main

raise SystemExit(main())
