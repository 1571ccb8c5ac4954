"""Utility and over-refusal: what a fine-tune or a mitigation costs in helpfulness.

Safety numbers alone mislead (a model that refuses everything scores perfectly), so every run also measures:
- `qa`: short questions with reference answers (built-in, offline), scored by normalized match (`fts.utility.qa`);
- over-refusal: safe prompts refused, on the built-in benign prompts and on XSTest's file when given, per prompt
  type and per refusal judge (`fts.results.metrics.over_refusal_block`);
- MT-Bench: two-turn questions graded 1-10 by an API judge, the paper's utility metric (`fts.utility.mt_bench`).
"""
