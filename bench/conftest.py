"""pytest configuration for the benchmark suites.

The project runs pytest with ``--import-mode=importlib``, which leaves ``sys.path`` alone, so the
suites could not import their shared ``harness`` module; putting ``bench/`` on the path fixes that
for every suite, whichever directory pytest is started from.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
