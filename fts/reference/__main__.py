"""`python -m fts.reference [--table 2] ...`: the cells of the paper fts compares against."""

from fts.results.reference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
