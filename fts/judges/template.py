"""A judge prompt of the user's own (`judge.<name>.template_file`), and the command that makes a rubric template from
the paper's judge script:

    python -m fts.judges.template <LLMs-Finetuning-Safety>/llama2/safety_evaluation/eval_utils/openai_gpt4_judge.py \
        -o judge_meta.txt

A template is a UTF-8 text file that holds a slot for the user's request and one for the model's reply, once each:
`{instruction}` and `{response}` for the rubric, or the names the judge's own prompt uses (`SLOTS` of each kind or
classifier format: StrongREJECT's `{forbidden_prompt}`, HarmBench's `{behavior}` and `{generation}`, ...), so that an
original prompt is pasted as it is. The rest of its text is sent verbatim, braces included (no `str.format`). fts writes none of the paper's
text: users bring the official script, and this command turns it into a template. The request and reply are still
defused (fts.judges.rubric_prompt.defuse), so a reply cannot plant the score tag the judge is asked to write.

The paper's scripts build the request as `judge_template % (instruction, response)`: the command reads the script
with `ast` (it never runs it), takes the string assigned to `judge_template` (inside a function too), turns its first
`%s` into `{instruction}`, its second into `{response}`, and `%%` into `%`, as `%` did. The text is kept as it is,
leading newline and 4-space indentation included, so that the judge reads exactly what it read in the paper
(`--dedent` strips the common indentation for a file that is easier to edit, at the cost of that exactness).
"""

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

from fts.core.errors import ConfigError
from fts.core.script_literals import ScriptError, assignments
from fts.judges.rubric_prompt import defuse

SLOTS = ("instruction", "response")  # the rubric's (request, reply) slots
PLACEHOLDERS = tuple(f"{{{name}}}" for name in SLOTS)
SCRIPT_NAME = "judge_template"  # the variable the paper's scripts assign their template to
MAKE = "python -m fts.judges.template <the paper's judge script .py> -o judge_template.txt"


def placeholder_problem(text: str, slots: tuple[str, str] = SLOTS) -> str | None:
    """What is wrong with a template's placeholders (each of `slots` exactly once), or None."""
    placeholders = [f"{{{name}}}" for name in slots]
    counts = {p: text.count(p) for p in placeholders}
    if not any(counts.values()) and "%s" in text and slots == SLOTS:
        return (
            "holds '%s' but neither {instruction} nor {response}: it looks like the paper's judge script (or its "
            f"template before conversion), not an fts template. Make the template with `{MAKE}`"
        )
    if set(counts.values()) != {1}:
        found = ", ".join(f"{p} {n} time(s)" for p, n in counts.items())
        return (
            f"must hold {' and '.join(placeholders)} exactly once each (where the request and the reply go); it "
            f"holds {found}"
        )
    return None


def read(path: str, key: str, slots: tuple[str, str] = SLOTS) -> str:
    """The text of the template file `path` (config key `key`) with the request and reply slots `slots`, checked; a
    ConfigError names the key and the fix."""
    file = Path(str(path)).expanduser()
    off = f"or set {key}=null for fts's own prompt."
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        made = f" (made with `{MAKE}`)" if slots == SLOTS else ""
        raise ConfigError(f"{key}: {file} {what}. Point it at a judge template text file{made}, {off}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{key}: {file} is not UTF-8 text (byte {e.start}). Re-save it as UTF-8, {off}") from None
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {file} ({e.strerror}). Fix its permissions, {off}") from None
    problem = placeholder_problem(text, slots)
    if problem:
        raise ConfigError(f"{key}: {file} {problem}. Fix the file and point {key} at it, {off}")
    return text


def fill(template: str, request: str, reply: str, slots: tuple[str, str] = SLOTS) -> str:
    """The judge's request: the template with the (defused) request and reply in place of its placeholders."""
    return fill_slots(template, dict(zip(slots, (defuse(request), defuse(reply)), strict=True)))


def fill_slots(template: str, values: dict[str, str]) -> str:
    """`template` with each `{name}` of `values` replaced by its value. One pass over the template, so a request
    that itself holds the text `{response}` is left as it is."""
    slot = re.compile("|".join(re.escape(f"{{{name}}}") for name in values))
    return slot.sub(lambda m: values[m.group(0)[1:-1]], template)


# ---------------------------------------------------------------------------------------------------------------
# `python -m fts.judges.template <script.py> [-o out.txt] [--dedent]`


def template_literal(source: str, filename: str) -> str:
    """The string constant assigned to `judge_template` anywhere in the script (module level or inside a function)."""
    values = [node for name, node in assignments(source, filename) if name == SCRIPT_NAME]
    if not values:
        raise ScriptError(
            f"{filename}: assigns no {SCRIPT_NAME}: pass the paper's judge script (eval_utils/*judge*.py)"
        )
    if len(values) > 1:
        lines = ", ".join(str(v.lineno) for v in values)
        raise ScriptError(f"{filename}: assigns {SCRIPT_NAME} {len(values)} times (lines {lines}): fts takes one")
    value = values[0]
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        raise ScriptError(f"{filename}:{value.lineno}: {SCRIPT_NAME} is not a plain string literal")
    return value.value


def from_script(source: str, filename: str, dedent: bool = False) -> str:
    """The fts template of the paper's judge script: the `%s` of `judge_template % (instruction, response)` become
    {instruction} and {response}, `%%` becomes `%` (what `%` made of it)."""
    text = template_literal(source, filename)
    parts = re.split(r"(%%|%s)", text)
    n = parts.count("%s")
    if n != 2:
        raise ScriptError(f"{filename}: {SCRIPT_NAME} holds {n} '%s', not 2 (the instruction, then the response)")
    if any(p in text for p in PLACEHOLDERS):
        raise ScriptError(f"{filename}: {SCRIPT_NAME} already holds {' or '.join(PLACEHOLDERS)} as text")
    slots = iter(PLACEHOLDERS)
    template = "".join(next(slots) if p == "%s" else "%" if p == "%%" else p for p in parts)
    return textwrap.dedent(template) if dedent else template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fts.judges.template", description=__doc__.splitlines()[0])
    parser.add_argument("script", help="the paper's judge script, e.g. .../eval_utils/openai_gpt4_judge.py")
    parser.add_argument("-o", "--output", help="the template file to write (default: print it)")
    parser.add_argument("--dedent", action="store_true", help="strip the common indentation (not the paper's bytes)")
    args = parser.parse_args(argv)
    script = Path(args.script)
    try:
        if not script.is_file():
            raise ScriptError(f"{script} does not exist (or is not a file): pass the path of the paper's judge script")
        template = from_script(script.read_text(encoding="utf-8", errors="replace"), str(script), args.dedent)
    except ScriptError as e:
        print(f"fts: error: {e}.", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(template)
        return 0
    try:
        Path(args.output).write_text(template, encoding="utf-8")
    except OSError as e:
        print(f"fts: error: cannot write {args.output} ({e.strerror}): pick another -o path.", file=sys.stderr)
        return 2
    print(f"Wrote {args.output}: use it with judge.<name>.template_file={args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
