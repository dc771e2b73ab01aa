"""``python -m sadtalker_ext``: the command line (see :mod:`sadtalker_ext.cli`)."""

import sys

from .cli import main

sys.exit(main())
