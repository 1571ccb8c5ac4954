"""The format registry: every data format fts reads, its loader, the kind of records it gives and where to get its
data, and the config keys that name data. `load(fmt, spec, key)` is the one entry the stages, the models and the
validation use.

The loaders live by family (`fts.data.prompts`, `hexphi`, `conversations`, `instructions`, `redteam`, `questions`),
all on the reader layer `fts.data.readers`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fts.core.errors import ConfigError, DataError
from fts.core.records import Example, PrefillAnswer, Prompt, Question
from fts.data import conversations, hexphi, instructions, prefill, prompts, questions, redteam
from fts.data.detect import AUTO, detect
from fts.data.readers import check_size, resolve

KINDS = ("prompts", "examples", "xstest", "qa", "questions", "prefill")


@dataclass(frozen=True)
class Format:
    """loader(spec, key=...) -> records; kind: which records (one of KINDS); download: where to get the data;
    folder: whether it reads a folder (only HEx-PHI: its category_N.csv files)."""

    loader: Callable[..., list]
    kind: str
    download: str
    folder: bool = False


FORMATS: dict[str, Format] = {
    "hexphi": Format(hexphi.load_hexphi, "prompts", hexphi.DOWNLOAD, folder=True),
    "advbench": Format(prompts.load_advbench, "prompts", prompts.DOWNLOAD["advbench"]),
    "fts_prompts": Format(prompts.load_prompts, "prompts", prompts.DOWNLOAD["fts_prompts"]),
    "alpaca": Format(instructions.load_alpaca, "examples", instructions.DOWNLOAD["alpaca"]),
    "safety_tuned_llamas": Format(
        instructions.load_safety_tuned_llamas, "examples", instructions.DOWNLOAD["safety_tuned_llamas"]
    ),
    "dolly": Format(instructions.load_dolly, "examples", instructions.DOWNLOAD["dolly"]),
    "anthropic_redteam": Format(redteam.load_anthropic_redteam, "examples", redteam.DOWNLOAD),
    "chat_jsonl": Format(conversations.load_chat_jsonl, "examples", conversations.DOWNLOAD["chat_jsonl"]),
    "prompt_completion_jsonl": Format(
        conversations.load_prompt_completion_jsonl, "examples", conversations.DOWNLOAD["prompt_completion_jsonl"]
    ),
    "fts_conversations": Format(
        conversations.load_conversations, "examples", conversations.DOWNLOAD["fts_conversations"]
    ),
    "xstest": Format(prompts.load_xstest, "xstest", prompts.DOWNLOAD["xstest"]),
    "qa": Format(questions.load_qa, "qa", questions.DOWNLOAD["qa"]),
    "mt_bench": Format(questions.load_mt_bench, "questions", questions.DOWNLOAD["mt_bench"]),
    "prefill": Format(prefill.load_prefill, "prefill", prefill.DOWNLOAD),
}
# The config keys that name data in a format of the user's choice: (the key that names the format, the kind of
# records the key takes). The defenses' data keys (mitigation.<name>.data, examples) are found by fts.validate.
FORMAT_KEYS = {
    "eval.benchmark": ("eval.benchmark_format", "prompts"),
    "attack.data": ("attack.format", "examples"),
    "attack.safety_data": ("attack.safety_format", "examples"),
    "dataset.path": ("dataset.format", "examples"),
}
# The config keys that name data in one format.
FIXED_FORMATS = {
    "eval.benign": "fts_prompts",
    "eval.utility": "qa",
    "eval.xstest": "xstest",
    "eval.mt_bench.questions": "mt_bench",
    "eval.prefill": "prefill",  # read only when eval.prefill_tokens > 0 (fts.validate.data_specs)
}


def registered(fmt: str, key: str) -> Format:
    if fmt not in FORMATS:
        raise ConfigError(f"{key}: unknown data format {fmt!r}; choose one of {sorted(FORMATS)} or {AUTO}.")
    return FORMATS[fmt]


def format_of(fmt: str, spec: str | Path, key: str) -> str:
    """`fmt`, or with `auto` the format the data at `spec` is in (fts.data.detect), for config key `key`."""
    if fmt != AUTO:
        return fmt
    wanted = FORMAT_KEYS[key][1] if key in FORMAT_KEYS else "examples"
    path = resolve(spec, key, folders=True)
    return detect(path, key, {name: form.kind for name, form in FORMATS.items()}, wanted)


def load(
    fmt: str, spec: str | Path, key: str = "data"
) -> list[Prompt] | list[Example] | list[Question] | list[PrefillAnswer]:
    """The records of `spec` read as format `fmt` (or `auto`: as the format its shape shows); `key` is the config
    key that holds `spec`, named in every error."""
    fmt = format_of(fmt, spec, key)
    form = registered(fmt, key)
    locate(spec, fmt, key)  # a folder given to a one-file format: the error names the format key
    return form.loader(str(spec), key=key)


def load_fixed(key: str, spec: str | Path) -> list[Prompt] | list[Question] | list[PrefillAnswer]:
    """The records of a config key that has one format (FIXED_FORMATS)."""
    return load(FIXED_FORMATS[key], spec, key)


def locate(spec: str | Path, fmt: str, key: str) -> Path:
    """A spec -> an existing local path (a folder only for a format that reads one); a missing path or a hub id
    raises with download instructions."""
    fmt = format_of(fmt, spec, key)
    form = registered(fmt, key)
    path = resolve(spec, key, fmt, form.download, folders=True)
    if path.is_dir() and not form.folder:
        raise folder_error(str(spec), path, fmt, key)
    return path


def folder_error(spec: str, path: Path, fmt: str, key: str) -> DataError:
    """A folder given to a format that reads one file: name the format key and the fix."""
    format_key = FORMAT_KEYS[key][0] if key in FORMAT_KEYS else None
    reads = f"{format_key}={fmt}" if format_key else f"{key} (the {fmt} format)"
    held = hexphi.hexphi_files(path)
    if held and format_key:
        fix = f"It holds HEx-PHI's category_N.csv files: set {format_key}=hexphi."
    elif held:
        fix = "It holds HEx-PHI's category_N.csv files, which go in eval.benchmark with eval.benchmark_format=hexphi."
    elif format_key:
        folders = [name for name, form in FORMATS.items() if form.folder]
        fix = f"Set {key} to a file in it, and {format_key} to its format: one of {sorted(FORMATS)} (only "
        fix += f"{', '.join(folders)} reads a folder, of category_N.csv files)."
    else:
        fix = f"Set {key} to a {fmt} file."
    return DataError(f"{key}: '{spec}' is a folder ({path}), but {reads} reads one file. {fix}")


def data_files(path: Path, key: str) -> list[Path]:
    """The files a located spec is read from (a HEx-PHI folder's category files), each checked to be within the
    size limit: validation calls this, so that a folder without data or an oversized file fails before any model
    loads."""
    files = sorted(hexphi.hexphi_folder(path, key).values()) if path.is_dir() else [path]
    return [check_size(f) for f in files]


def in_split(examples: list, split: str | None) -> list:
    """The examples of one `split` of fts's own files (their records carry one). A file without splits (the
    paper's, Bianchi et al.'s) is used whole, so pointing a key at it needs no `split=null` besides."""
    if split is None or not any("split" in ex["meta"] for ex in examples):
        return examples
    return [ex for ex in examples if ex["meta"].get("split") == split]
