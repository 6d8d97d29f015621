"""``python -m vinaflow.cli``: the command line (``torchrun ... -m vinaflow.cli run``)."""

import sys

from vinaflow.cli import main

sys.exit(main())
