import sys

from tanji.cli import main

sys.exit(main())
