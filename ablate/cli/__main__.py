"""``python -m ablate.cli``: the command line."""

import sys

from ablate.cli import main

sys.exit(main())
