"""``python -m aft_bench`` (also the torchrun entry point: ``torchrun ... -m aft_bench train ...``)."""

import sys

from aft_bench.apps.cli import main

sys.exit(main())
