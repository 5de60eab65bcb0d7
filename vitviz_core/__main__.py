"""``python -m vitviz_core``: see :mod:`vitviz_core.cli`."""

import sys

from vitviz_core.cli import main

sys.exit(main())
