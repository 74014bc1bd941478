"""`python -m order_devtools.images` (what `make images` runs)."""

import sys

from order_devtools.images.cli import main

sys.exit(main())
