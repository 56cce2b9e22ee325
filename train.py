"""Train one LDOS surrogate, or run a search with `-m`.

    python train.py data.dir=/path/to/Be2 training.max_epochs=5
    python train.py -m hyper_opt_method=tpe

The function returns the run's objective (the configured validation metric of the best
epoch), the float a Hydra sweeper optimizes.
"""

import hydra
from omegaconf import DictConfig

from malahydra.training.run import run_training


@hydra.main(config_path="pkg://malahydra.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_training(cfg)


if __name__ == "__main__":
    main()
