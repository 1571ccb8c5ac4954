"""`python -m fts.report <multirun dir> [--out DIR] [--wandb-project P]`: sweep tables and plots."""

from fts.results.report import main

if __name__ == "__main__":
    raise SystemExit(main())
