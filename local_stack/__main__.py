"""Entry point of ``python -m local_stack`` (see ``local_stack.cli``)."""

import sys

from local_stack.cli import main

sys.exit(main())
