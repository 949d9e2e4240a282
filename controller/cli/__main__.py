"""`python -m controller.cli`: the `givre` command without its installed script."""

import sys

from controller.cli.main import main

sys.exit(main())
