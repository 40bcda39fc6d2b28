"""``python -m clustercore``: the command line (see :mod:`clustercore.cli`)."""

from .cli import main

raise SystemExit(main())
