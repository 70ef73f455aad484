"""``python -m prefcore``: the same command line as ``prefcore``."""

from __future__ import annotations

import sys

from prefcore.cli import main

sys.exit(main())
