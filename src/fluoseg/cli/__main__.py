"""``python -m fluoseg.cli``: the command line."""

import sys

from fluoseg.cli.main import main

sys.exit(main())
