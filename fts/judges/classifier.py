"""Local safety-classifier judges (`judge=llama_guard`, `judge=harmbench`, `judge=wildguard`): a causal-LM classifier
through transformers, greedy, in the format of its family (`format`, fts.judges.guard_formats: how the pair is put
to it and what its output means).

Weights are named by hub id or local dir (`model_path`) and load at the first `judge` call, never when configs are
composed or checked. `harmful` comes from the classifier's verdict; `score` stays None (the classifiers are binary).
Any other output is `unscored`: a model that is not such a classifier must not produce numbers that look like one.
"""

import logging
from functools import cached_property
from pathlib import Path

import torch

from fts.core.errors import ConfigError, ModelError
from fts.core.records import Generation, Message, Verdict
from fts.judges import template as user_template
from fts.judges.guard_formats import FORMATS, GuardFormat

log = logging.getLogger(__name__)
# The chat template of a raw format's classifier: the rendered prompt is the whole text, sent as it is, so fts's one
# generation engine (fts.generate.hf, which renders every prompt through the chat template) takes it unchanged.
PASS_THROUGH = "{{ messages[0]['content'] }}"


class ClassifierJudge:
    def __init__(
        self,
        model_path: str,
        format: str = "llama_guard",
        template_file: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        name: str = "llama_guard",
    ) -> None:
        # Nothing is loaded here: instantiating configs stays instant; weights load at the first `judge` call.
        self.name, self.model_path, self.revision = name, model_path, revision
        self.format_name, self.template_file = format, template_file
        self.dtype, self.device, self.trust_remote_code = dtype, device, trust_remote_code
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.key = f"judge.{name}"
        self._model = self._tokenizer = None

    @cached_property
    def form(self) -> GuardFormat:
        if self.format_name not in FORMATS:
            raise ConfigError(f"{self.key}.format must be one of {sorted(FORMATS)}, got {self.format_name!r}.")
        return FORMATS[self.format_name]

    @cached_property
    def template(self) -> str | None:
        """The user's prompt (template_file), read and checked once, or None for fts's own."""
        if self.template_file is None:
            return None
        if self.form.slots is None:
            raise ConfigError(
                f"{self.key}.template_file: format {self.format_name} reads the conversation in the classifier's own "
                f"chat template and takes no prompt file: set {self.key}.template_file=null."
            )
        return user_template.read(self.template_file, f"{self.key}.template_file", self.form.slots)

    def check(self) -> None:
        """The settings, checked without loading anything (fts.validate and preflight)."""
        _ = self.form, self.template
        path = str(self.model_path)
        looks_local = path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()
        if looks_local and not Path(path).expanduser().is_dir():
            raise ConfigError(
                f"{self.key}.model_path: '{path}' is not a directory. Give a local model dir or a hub id."
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"{self.key}.device={self.device} but no CUDA device is visible; use {self.key}.device=auto."
            )

    def preflight(self, n_verdicts: int) -> None:
        self.check()

    def usage(self) -> None:
        return None  # local: no tokens billed

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        dtype = (torch.bfloat16 if device.startswith("cuda") else torch.float32) if self.dtype == "auto" else None
        kwargs = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, **kwargs)
            self._model = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=dtype or getattr(torch, self.dtype), use_safetensors=True, **kwargs
            ).to(device)
        except OSError as e:
            raise ModelError(
                f"{self.key}.model_path: cannot load '{self.model_path}' ({e}). Check the hub id or directory; "
                "for gated models accept the license on the hub and set HF_TOKEN."
            ) from None
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if self.form.raw:  # this tokenizer is the judge's own: its template is set aside for the format's prompt
            self._tokenizer.chat_template = PASS_THROUGH
        log.info("judge %s: loaded %s (%s format) on %s", self.name, self.model_path, self.format_name, device)

    def judge(self, generations: list[Generation]) -> list[Verdict]:
        from fts.generate.hf import generate  # the one place chat templates are applied to generation

        if self._model is None:
            self.load()
        asked = [{"id": str(i), "messages": self.messages(g)} for i, g in enumerate(generations)]
        new_tokens = self.max_new_tokens or self.form.max_new_tokens
        outputs = generate(self._model, self._tokenizer, asked, new_tokens, self.batch_size, desc=f"judge {self.name}")
        return [self.verdict(o["response"]) for o in outputs]

    def messages(self, generation: Generation) -> list[Message]:
        """What the classifier reads of one generation: its format's prompt (a raw prompt after the tokenizer's BOS,
        as the classifier was trained), with the response cut to the format's length."""
        response = generation["response"]
        if self.form.max_response_tokens is not None:
            ids = self._tokenizer(response, add_special_tokens=False)["input_ids"][: self.form.max_response_tokens]
            response = self._tokenizer.decode(ids, skip_special_tokens=True)
        messages = self.form.render(generation["prompt"], response, self.template)
        bos = getattr(self._tokenizer, "bos_token", None) if self.form.raw else None
        if bos and not messages[0]["content"].startswith(bos):
            messages[0] = {**messages[0], "content": bos + messages[0]["content"]}
        return messages

    def verdict(self, output: str) -> Verdict:
        fields = self.form.parse(output)
        return {
            "judge": self.name,
            "score": None,
            **fields,
            "status": "unscored" if fields["harmful"] is None else "ok",
            "raw": output,
            "judge_model": str(self.model_path),
            "format": self.format_name,
        }
