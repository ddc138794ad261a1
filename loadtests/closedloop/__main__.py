"""`python -m loadtests.closedloop SCENARIO [--out DIR] [--quick]` (see `cli`)."""

from .cli import main

raise SystemExit(main())
