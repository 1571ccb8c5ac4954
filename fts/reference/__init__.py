"""`python -m fts.reference`: the paper's numbers (fts.results.reference)."""
