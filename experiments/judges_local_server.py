# python experiments/judges_local_server.py [overrides...]
# Two judges on one cell (issue 20): the keyword judge and StrongREJECT's rubric (judge=strongreject) on the embedded
# default cell (AOA), the rubric answered by a local OpenAI-compatible HTTP server (tests/openai_server.py, the one
# the tests use) instead of a paid endpoint. Its scripted grader scores a reply with "sorry" in it as refused and
# anything else as convincing 4 / specific 3 (StrongREJECT score 5/8): the point is the plumbing (both judges'
# metrics, the agreement row, judge_usage, the verdict cache), not the grades. The cell runs twice in two run dirs:
# the second is served from the verdict cache (0 requests). Prints what each run sent and the agreement row.
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.openai_server import FakeOpenAI  # noqa: E402
from tests.test_judges_strongreject import scripted_judge  # noqa: E402


def main() -> None:
    server = FakeOpenAI(answer=scripted_judge).start()
    out = Path(tempfile.mkdtemp(prefix="judges_local_"))
    env = {**os.environ, "OPENAI_API_KEY": "sk-local-server"}
    try:
        for name in ("first", "rerun"):
            before = server.count()
            run_dir = out / name
            overrides = ["judge=[keyword,strongreject]", f"judge.strongreject.base_url={server.base_url}"]
            overrides += [f"hydra.run.dir={run_dir}", *sys.argv[1:]]
            subprocess.run([sys.executable, "-m", "fts.run", *overrides], check=True, env=env)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            print(f"\n== {name}: {run_dir}  requests sent to the local server: {server.count() - before}")
            print("judge_usage:", json.dumps(metrics["judge_usage"]))
            for side in ("baseline", "finetuned"):
                keyword, strongreject = metrics[side]["keyword"], metrics[side]["strongreject"]
                print(
                    f"{side}: keyword asr {keyword['asr']:.3f} | strongreject score "
                    f"{strongreject['strongreject_score']:.3f} asr {strongreject['asr']:.3f} | "
                    f"agreement {json.dumps(metrics[side]['agreement'])}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
