"""Hydra entry points: `testbed` runs one job (or a multirun sweep) of the pipeline."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from testbed.config import register_configs
from testbed.pipeline import run

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
