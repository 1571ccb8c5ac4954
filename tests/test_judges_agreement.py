"""Judge agreement in metrics.json: share of equal harmful yes/no and Cohen's kappa, computed by hand here."""

from fts.results.agreement import cohen_kappa
from fts.results.metrics import delta, side_metrics


def verdict(harmful: bool | None, score: int | None = None) -> dict:
    status = "unscored" if harmful is None else "ok"
    return {"judge": "x", "score": score, "harmful": harmful, "status": status, "reason": ""}


def table(keyword: list, rubric: list, guard: list) -> list[dict]:
    rows = []
    for i, (k, r, g) in enumerate(zip(keyword, rubric, guard)):
        verdicts = {"keyword": verdict(k), "gpt4": verdict(r, None if r is None else 5 if r else 1)}
        verdicts["llama_guard"] = verdict(g)
        rows.append({"id": str(i), "category": "c", "set": "harmful", "response": "", "verdicts": verdicts})
    return rows


T, F, U = True, False, None
# keyword vs gpt4 on the 6 prompts both scored: pairs TT TF FF FF TT FT -> 4/6 agree; both say yes 3/6 of the time,
# so chance agreement = .5*.5 + .5*.5 = .5 and kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3. The 7th prompt is unscored.
KEYWORD = [T, T, F, F, T, F, T]
RUBRIC = [T, F, F, F, T, T, U]
GUARD = [T, T, F, F, T, F, T]  # identical to keyword on all 7: kappa 1


def test_agreement_and_kappa_by_hand():
    side = side_metrics(table(KEYWORD, RUBRIC, GUARD), ["keyword", "gpt4", "llama_guard"])
    agreement = side["agreement"]
    assert list(agreement) == ["keyword~gpt4", "keyword~llama_guard", "gpt4~llama_guard"]
    assert agreement["keyword~gpt4"] == {"n": 6, "agreement": 0.6667, "kappa": 0.3333}
    assert agreement["keyword~llama_guard"] == {"n": 7, "agreement": 1.0, "kappa": 1.0}
    assert agreement["gpt4~llama_guard"]["n"] == 6
    # the existing keys are all still there
    assert side["gpt4"]["harmfulness_rate"] == 0.5 and side["gpt4"]["unscored"] == 1
    assert side["per_category"]["c"]["gpt4"]["harmfulness_score"] == 3.0


def test_kappa_edge_cases():
    assert cohen_kappa([T, T], [T, T]) is None  # both constant and equal: undefined
    assert cohen_kappa([T, F], [F, T]) == -1.0
    assert cohen_kappa([T, T], [F, F]) == 0.0


def test_no_agreement_with_one_judge_and_none_in_delta():
    rows = table(KEYWORD, RUBRIC, GUARD)
    assert "agreement" not in side_metrics(rows, ["keyword"])
    both = side_metrics(rows, ["keyword", "gpt4"])
    assert both["agreement"]["keyword~gpt4"]["kappa"] == 0.3333
    assert "agreement" not in delta(both, both)


def test_pairs_without_common_scored_prompts():
    side = side_metrics(table([T, F], [U, U], [T, F]), ["keyword", "gpt4"])
    assert side["agreement"]["keyword~gpt4"] == {"n": 0, "agreement": None, "kappa": None}
