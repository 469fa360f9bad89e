"""Allow ``python -m petbind``."""

from petbind.cli import main

main()
