"""`python -m simulator.cli`: the `simulate` command without its console script."""
import sys

from . import main

sys.exit(main())
