"""``python -m attnless``."""

from attnless.cli import main

main()
