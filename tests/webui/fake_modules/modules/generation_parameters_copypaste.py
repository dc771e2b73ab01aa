"""1.8+ keeps the old name as an alias of infotext_utils (``sys.modules`` entry)."""

import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
