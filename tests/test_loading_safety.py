"""Loading safety: no model's own Python code runs unless its config says so, only safetensors are loaded (never a
pickle), and nothing a config or a cache record names can make fts read or write outside its folders."""

import ast
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fts.core.cache import FILES, Cache
from fts.core.errors import ConfigError, ModelError
from fts.models import load
from fts.train.hf import load_trained
from fts.validate import validate
from tests.conftest import CONF_DIR, compose_run

FTS_DIR = Path(__file__).resolve().parents[1] / "fts"


def model_cfg(path, **extra):
    base = {"path": str(path), "revision": None, "trust_remote_code": False, "dtype": "float32"}
    return OmegaConf.create({**base, "chat_template": None, "system_role": True, **extra})


def test_no_config_turns_remote_code_on():
    for path in Path(CONF_DIR).rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("trust_remote_code:"):
                assert line.split(":", 1)[1].split("#")[0].strip() == "false", f"{path}: {line}"


def test_every_model_load_in_fts_asks_for_safetensors():
    """Each from_pretrained of a model passes use_safetensors=True (or reads a GGUF file); none trusts code."""
    for source in FTS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained"):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            for k, v in keywords.items():
                assert not (k == "trust_remote_code" and isinstance(v, ast.Constant) and v.value is True), source
            owner = ast.unparse(node.func.value)
            if owner in ("AutoModelForCausalLM",) and "gguf_file" not in keywords:
                assert "use_safetensors" in keywords or None in keywords, f"{source}:{node.lineno}"


def test_a_model_with_its_own_code_is_not_run_and_the_error_says_how(tiny_model_dir, tmp_path):
    path = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    config = json.loads((path / "config.json").read_text())
    config |= {
        "model_type": "custom_llama",
        "auto_map": {"AutoConfig": "code.Config", "AutoModelForCausalLM": "code.M"},
    }
    (path / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "remote-code-ran"
    (path / "code.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    with pytest.raises(ModelError, match=r"ships its own Python code .*set model\.trust_remote_code=true"):
        load(str(path), model_cfg(path))
    assert not ran.exists()


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    path = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")  # the same weights, as a pickle
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"has no safetensors weights .*fts loads safetensors only"):
        load(str(path), model_cfg(path))


def test_a_pickled_adapter_is_not_loaded(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "adapter_config.json").write_text("{}")
    (model_dir / "adapter_model.bin").write_bytes(b"a pickle")
    with pytest.raises(ModelError, match=r"no adapter_model\.safetensors .*never a pickled adapter_model\.bin"):
        load_trained(object(), model_dir)


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "..", ""])
def test_task_name_must_stay_one_folder(name, tmp_path):
    with pytest.raises(ConfigError, match=r"task_name=.* is a folder name under paths\.log_dir"):
        validate(compose_run([f"task_name='{name}'"], tmp_path))


def test_a_cache_record_naming_a_file_outside_its_entry_is_corrupt(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not the cache's")
    cache = Cache(tmp_path / "cache")
    entry = cache.build("generations", {"k": 1}, lambda tmp: (tmp / "g.jsonl").write_text("{}\n"))
    (entry / FILES).write_text(json.dumps({"../../../secret.txt": {"size": 15, "sha256": "x", "sampled": False}}))
    assert cache.get("generations", {"k": 1}) is None
