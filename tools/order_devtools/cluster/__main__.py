"""`python -m order_devtools.cluster up | down | status` (what `make cluster-up/down` run)."""

import sys

from order_devtools.cluster.cli import main

sys.exit(main())
