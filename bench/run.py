"""Run msgcore's benchmark suite: ``python bench/run.py [--quick] [--loop ...] [--json F]``.

See docs/benchmarks.md for what it measures and how to read it.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `python bench/run.py` puts bench/ itself first on sys.path. Put the repository root
# there instead, so `bench` is a package and no module in bench/ shadows another one.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
try:
    import msgcore  # noqa: F401 - installed (pip install -e .) or not
except ImportError:
    sys.path.insert(1, str(ROOT / "src"))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
