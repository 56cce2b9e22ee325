"""Overhead of the sweeper: `train.py -m` against a bare Optuna loop on the same trainings.

The sweep runs 20 one-epoch TPE trials on Be2 in the mala_standard space; the bare loop
then trains the same configurations in the same order. Each side is its own Python
process, and the script prints both wall times and their ratio (target: sweeper / bare
<= 1.15). The sweeper side includes
everything a user pays for: Hydra composition per job, the SQLite study, the result
files and the job directories.

    python bench/orchestration.py --data-dir /path/to/Be2 [--trials 20]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Benchmark this checkout, also when another copy of malahydra is installed.
sys.path.insert(0, str(REPO))


def run_bare_loop(data_dir: str, sweep_dir: Path, output: Path) -> None:
    """The reference: an Optuna ask/tell loop calling the training function directly.

    It trains the configurations of the sweep's SQLite study in the same order, so both
    sides do the same training work.
    """
    import optuna
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from malahydra.search.space import format_override
    from malahydra.training.run import train

    swept = optuna.load_study(study_name="malahydra", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    study = optuna.create_study()
    for trial in sorted(swept.trials, key=lambda t: t.number):
        study.enqueue_trial(trial.params)

    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        for _ in swept.trials:
            trial = study.ask()
            overrides = [format_override(name, value) for name, value in trial.params.items()]
            cfg = compose(config_name="config", overrides=[
                "sweeps=mala_standard", f"data.dir={data_dir}", "training.max_epochs=1", *overrides])
            with open_dict(cfg):
                cfg.pop("hydra", None)
            job_dir = output / str(trial.number)
            job_dir.mkdir(parents=True)
            study.tell(trial, train(cfg, job_dir)["objective"])


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "Be2"),
                        help="folder with the Be2 snapshots")
    parser.add_argument("--trials", type=int, default=20, help="trials on each side")
    parser.add_argument("--bare", nargs=2, metavar=("SWEEP_DIR", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        run_bare_loop(args.data_dir, Path(args.bare[0]), Path(args.bare[1]))
        return

    with tempfile.TemporaryDirectory() as scratch:
        sweep = timed([
            sys.executable, str(REPO / "train.py"), "-m", f"data.dir={args.data_dir}", "sweeps=mala_standard",
            "training.max_epochs=1", f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.seed=1",
            f"hydra.sweep.dir={scratch}/sweep"])
        bare = timed([sys.executable, __file__, "--data-dir", args.data_dir, "--bare", f"{scratch}/sweep", f"{scratch}/bare"])
    print(f"bare Optuna loop, same configurations: {bare:.1f} s for {args.trials} trials")
    print(f"train.py -m (SQLite study):            {sweep:.1f} s")
    print(f"ratio sweeper/bare: {sweep / bare:.3f} (target <= 1.15); "
          f"overhead {(sweep - bare) / args.trials * 1000:.0f} ms per trial")


if __name__ == "__main__":
    main()
