"""``python -m dream_plugin.cli``: the same as the ``dream-plugin`` command."""

import sys

from dream_plugin.cli import main

sys.exit(main())
