"""`python -m order_devtools.engines` (what `make engines` runs)."""

import sys

from order_devtools.engines.cli import main

sys.exit(main())
