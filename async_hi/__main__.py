import sys

from async_hi.cli import main

sys.exit(main())
