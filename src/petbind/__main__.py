"""Allow ``python -m petbind``."""

from petbind.cli import main

if __name__ == "__main__":  # not when re-imported by spawned worker processes (dask)
    main()
