"""Composing and instantiating configs: the one place fts calls Hydra's `compose` and `instantiate`.

Heavy things (weights, datasets) are never built here: `build` makes leaf objects (attacks, judges, PEFT configs)
from `_target_` nodes, and the stages load what they need, so composing a config stays instant.
"""

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from fts.core.errors import ConfigError, FtsError


def build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Instantiate a `_target_` node (leaf objects only: attacks, judges, PEFT configs).

    The one place fts calls `hydra.utils.instantiate`: plain containers go in (`_convert_="all"`, because PEFT and
    W&B choke on ListConfig), and an FtsError raised by the target comes out as itself, not wrapped in Hydra's
    InstantiationException, so that the user sees the one-paragraph message.
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, FtsError):
            raise e.__cause__ from None
        raise ConfigError(f"cannot build {node.get('_target_')}: {e}") from None


CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def compose_run(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """conf/run.yaml composed as `python -m fts.run <overrides>` would, with Hydra's runtime set (run dir =
    `output_dir`): for tests, benchmarks and notebooks that call `fts.run.run(cfg)` in-process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    return cfg
