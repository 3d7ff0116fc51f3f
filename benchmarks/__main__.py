"""``python -m benchmarks``: see ``benchmarks/_runner.py``."""

import sys

from benchmarks._runner import main

sys.exit(main())
