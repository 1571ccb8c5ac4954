"""The embedded model's alignment recipe (`model.alignment`, part of `fts.validate.validate`)."""

from omegaconf import DictConfig

from fts.core.device import DTYPE_SETTINGS

ATTENTION = ("eager", "sdpa", "flash_attention_2", None)  # transformers' names; None: model.attn_implementation


def alignment_problems(alignment: DictConfig | dict) -> list[str]:
    """The embedded model's alignment recipe: every data part draws its formats from groups the recipe defines, and
    every user template keeps the request."""
    if not alignment.get("enabled"):
        return []
    problems = []
    if alignment.get("base_dtype", "auto") not in DTYPE_SETTINGS:
        problems.append(f"model.alignment.base_dtype must be auto, float32 or bfloat16; got {alignment.base_dtype!r}.")
    if alignment.get("attn_implementation") not in ATTENTION:
        problems.append(
            f"model.alignment.attn_implementation must be one of {list(ATTENTION)}; got {alignment.attn_implementation!r}."
        )
    groups = alignment.get("formats") or {}
    for i, part in enumerate(alignment.get("data") or []):
        names = part.get("formats") or []
        if not names:
            problems.append(f"model.alignment.data[{i}].formats: name one or more of {sorted(groups)}.")
        for name in names:
            if name not in groups:
                problems.append(
                    f"model.alignment.data[{i}].formats: {name!r} is not a format group; the groups are "
                    f"{sorted(groups)} (model.alignment.formats.<name>.system_prompts / user_templates)."
                )
    for name, group in groups.items():
        if not (group or {}).get("system_prompts"):
            problems.append(f"model.alignment.formats.{name}.system_prompts: list at least one (null = none).")
        for template in (group or {}).get("user_templates") or []:
            if "{prompt}" not in str(template):
                problems.append(
                    f"model.alignment.formats.{name}.user_templates: {template!r} must contain '{{prompt}}' "
                    "(the request)."
                )
    return problems
