"""`python -m fts.reference [--table 2] [--model gpt-3.5] [--tier aoa] [--metric harmfulness_rate]`: the paper's
cells as an aligned table (id, metric, value as printed; % for rates)."""

import argparse
import os
import sys

from fts.results import reference
from fts.results.reference.compare import entry, paper_value


def rows(cells: list[dict]) -> list[tuple[str, str, str]]:
    return [(c["id"], c["metric"], paper_value(entry(c))) for c in cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fts.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="2, table2 or fig5a")
    parser.add_argument("--model", help="part of the model name: gpt-3.5, llama")
    parser.add_argument("--tier", help="harmful, aoa, benign, backdoor, none")
    parser.add_argument("--metric", help="harmfulness_rate, harmfulness_score, keyword_asr, ...")
    args = parser.parse_args(argv)
    table = rows(reference.cells_for(table=args.table, model=args.model, tier=args.tier, metric=args.metric))
    header = ("id", "metric", "value")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in [header, *table]]
    try:
        print("\n".join(lines) + f"\n\n{len(table)} cells. {reference.cite()}", flush=True)
    except BrokenPipeError:  # `| head` stopped reading: not an error (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
