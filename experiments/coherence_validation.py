# python experiments/coherence_validation.py [--n 120]
# Validates eval.coherence (fts/utility/coherence.py) on fts's built-in sets, with the configured scorer (the embedded
# SmolLM2-135M-Instruct as shipped). Three kinds of answer to the same requests:
#   real:      fts's own answers (benign.jsonl answers to their requests, safety.jsonl refusals to theirs): fluent, on topic;
#   shuffled:  the same answers with their words shuffled (seeded): the same words, no language;
#   swapped:   each answer given to another request of its file (rotated by one): fluent, off topic.
# Prints, for `logprob` (real vs shuffled) and `gain` (real vs swapped), the AUC, the threshold with the best
# accuracy and the accuracy at the configured thresholds (conf/eval/builtin.yaml eval.coherence), then what share of
# each kind the measure calls coherent / on topic. The README's "What the embedded model shows" records the figures.
import argparse
import random
import sys

from fts.core.cache import Cache
from fts.core.config import compose_run
from fts.data.formats import load
from fts.utility.coherence import CoherenceScorer


def pairs(n: int) -> list[dict]:
    rows = []
    for spec in ("builtin:benign.jsonl", "builtin:safety.jsonl"):
        examples = load("auto", spec, "data")[: n // 2]
        rows += [
            {"prompt": ex["messages"][-2]["content"], "response": ex["messages"][-1]["content"]} for ex in examples
        ]
    return rows


def shuffled(rows: list[dict], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for r in rows:
        words = r["response"].split()
        rng.shuffle(words)
        out.append({**r, "response": " ".join(words)})
    return out


def swapped(rows: list[dict]) -> list[dict]:
    half = len(rows) // 2  # rotate within each file, so that a refusal goes to another harmful request
    parts = [rows[:half], rows[half:]]
    return [{**r, "response": part[(i + 1) % len(part)]["response"]} for part in parts for i, r in enumerate(part)]


def auc(positive: list[float], negative: list[float]) -> float:
    wins = sum((p > q) + 0.5 * (p == q) for p in positive for q in negative)
    return wins / (len(positive) * len(negative))


def best_threshold(positive: list[float], negative: list[float]) -> tuple[float, float]:
    candidates = sorted(set(positive + negative))
    scored = [(accuracy(positive, negative, t), t) for t in candidates]
    return max(scored)[1], max(scored)[0]


def accuracy(positive: list[float], negative: list[float], threshold: float) -> float:
    right = sum(p >= threshold for p in positive) + sum(q < threshold for q in negative)
    return right / (len(positive) + len(negative))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=120, help="requests (half benign, half harmful with refusals)")
    args = p.parse_args(argv)
    cfg = compose_run([])
    settings = cfg.eval.coherence
    scorer = CoherenceScorer(cache=Cache(cfg.cache.dir), **settings)
    real = pairs(args.n)
    scores = {
        kind: scorer.score(rows)
        for kind, rows in (("real", real), ("shuffled", shuffled(real)), ("swapped", swapped(real)))
    }
    result = {}
    for metric, positive, negative, configured in (
        ("logprob", "real", "shuffled", settings.min_logprob),
        ("gain", "real", "swapped", settings.min_gain),
    ):
        pos = [s[metric] for s in scores[positive]]
        neg = [s[metric] for s in scores[negative]]
        threshold, best = best_threshold(pos, neg)
        result[metric] = {"auc": auc(pos, neg), "best_threshold": threshold, "best_accuracy": best,
                          "configured": configured, "accuracy_at_configured": accuracy(pos, neg, configured)}  # fmt: skip
        print(
            f"{metric}: {positive} vs {negative}: AUC {result[metric]['auc']:.3f}; best threshold {threshold:.3f} "
            f"(accuracy {best:.1%}); configured {configured} -> accuracy {result[metric]['accuracy_at_configured']:.1%}"
        )
    for kind, records in scores.items():
        coherent = sum(r["coherent"] for r in records) / len(records)
        on_topic = sum(r["on_topic"] for r in records) / len(records)
        print(f"{kind:>8}: {len(records)} answers, called coherent {coherent:.1%}, on topic {on_topic:.1%}")
        result[kind] = {"coherent": coherent, "on_topic": on_topic}
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
