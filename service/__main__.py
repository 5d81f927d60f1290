"""``python -m service serve ...`` is ``mqlflow serve ...``."""

import sys

from service.cli import main

sys.exit(main())
