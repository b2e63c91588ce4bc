"""``python -m fastmnist``: the same as the ``fastmnist`` command."""

import sys

from .cli import main

sys.exit(main())
