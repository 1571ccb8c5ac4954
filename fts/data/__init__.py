"""Data: files in, `Prompt` / `Example` / `Question` records out.

- `fts.data.readers`: the one reader layer (a spec located, a file read within the size limit, JSON/JSONL records
  and CSV rows with their positions, text fields checked);
- `fts.data.formats`: the format registry `FORMATS` and `load(fmt, spec, key)`, the one entry point;
- the loaders, by family: `prompts` (fts's prompts, AdvBench, XSTest), `hexphi`, `conversations` (fts's, chat and
  prompt/completion JSONL), `instructions` (Alpaca, safety-tuned-llamas, Dolly), `redteam` (hh-rlhf), `questions`
  (fts's QA, MT-Bench), `prefill` (the prefilling attack's answers);
- `lengths` and `contamination`: checks on loaded records.

A data spec is either `builtin:<file>` (a file shipped in `fts/data/builtin/`) or a path to a local file.
"""
