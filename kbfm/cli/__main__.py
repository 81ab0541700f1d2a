"""``python -m kbfm.cli``."""

from . import main

main()
