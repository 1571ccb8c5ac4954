"""Contamination check: no evaluation prompt may appear in the fine-tuning set (exactly or nearly).

Run before training on every run; hits are reported (and written to `contamination.json`) so that a user's data
file that contains benchmark prompts is caught before it inflates or deflates a result.
"""

import re

from fts.core.records import Example, Prompt

NEAR_DUPLICATE_JACCARD = 0.8  # word-set overlap above which two prompts count as the same request


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def find_overlaps(eval_prompts: list[Prompt], train_set: list[Example]) -> list[dict]:
    """Eval prompts whose bare request occurs in (or nearly equals) a user turn of the training set."""
    train_texts = [
        (normalize(m["content"]), ex["source"]) for ex in train_set for m in ex["messages"] if m["role"] == "user"
    ]
    train_words = [(set(text.split()), text, source) for text, source in train_texts]
    hits = []
    for p in eval_prompts:
        needle = normalize(p["prompt"])
        words = set(needle.split())
        for train_word_set, text, source in train_words:
            exact = bool(needle) and needle in text
            jaccard = len(words & train_word_set) / max(1, len(words | train_word_set))
            if exact or jaccard >= NEAR_DUPLICATE_JACCARD:
                kind = "exact" if exact else f"near (Jaccard {jaccard:.2f})"
                hits.append({"eval_id": p["id"], "prompt": p["prompt"], "train_source": source, "match": kind})
                break
    return hits
