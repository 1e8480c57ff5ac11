"""``python -m fluoseg.cli``: the command line."""

import sys

from fluoseg.cli.main import main

# guarded: processes started by ``fluoseg train --nproc`` (multiprocessing's spawn) import this
# module again and must not run the command line a second time
if __name__ == "__main__":
    sys.exit(main())
