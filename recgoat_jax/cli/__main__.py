"""`python -m recgoat_jax.cli ...` is `recgoat-jax ...`."""

import sys

from recgoat_jax.cli import main

sys.exit(main())
