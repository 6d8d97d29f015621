import sys

from vinaflow.cli import main

sys.exit(main())
