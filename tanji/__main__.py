"""`python -m tanji`: the same command as the `tanji` script."""

import sys

from tanji.cli import main

sys.exit(main())
