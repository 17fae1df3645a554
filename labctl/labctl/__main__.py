"""``python -m labctl`` is the same as the ``labctl`` command."""

import sys

from .cli import main

sys.exit(main())
