"""Overhead of the sweeper: `train.py -m` against a bare Optuna loop on the same trainings.

The sweep runs 20 one-epoch TPE trials on Be2 in the mala_standard space; the bare loop
then trains the same configurations in the same order. Each side is its own Python
process, timed from start to exit. The sweeper side includes everything a user pays
for: Hydra composition per job, the SQLite study, the result files and the job
directories.

The bare loop builds each trial's config with Hydra's `compose()`. A second loop, for
information, composes the config once and copies and updates it per trial, which is
the least config work a script can do. Its row shows what the sweep costs beyond that.

Both sides train with one torch thread (`training.num_threads=1`), so that each needs
one core and other processes on a shared machine disturb it less. The sides run one
after another, sweep, bare loop, compose-once loop, for `ROUNDS` rounds, so that a
spell of load from other processes hits all alike. Each round gives one ratio sweep /
loop per loop; each row reports the median ratio (target for the bare loop: <= 1.15),
its range, and the median wall time of each side.

    MALAHYDRA_DATA_DIR=/path/to/Be2 python bench/orchestration.py [--quick] [--runs N]

`--quick` runs one round of 3 trials per side instead of `ROUNDS` rounds of 20.
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Benchmark this checkout, also when another copy of malahydra is installed.
sys.path.insert(0, str(REPO))

if __package__:
    from . import common
else:
    import common

TRIALS = 20
# Rounds per run: 25 to 35 s each on 2 cores, so a full run takes about 4 minutes.
ROUNDS = 7
RATIO_TARGET = 1.15
THREADS = "training.num_threads=1"


def run_bare_loop(data_dir: str, sweep_dir: Path, output: Path, compose_once: bool = False) -> None:
    """The reference: an Optuna ask/tell loop calling the training function directly.

    It trains the configurations of the sweep's SQLite study in the same order, so both
    sides do the same training work. Each trial's config comes from Hydra's `compose()`,
    or with `compose_once` from one composed config, copied and updated with the
    trial's values.
    """
    import copy

    import optuna
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict

    from malahydra.search.space import format_override
    from malahydra.training.run import train

    swept = optuna.load_study(study_name="malahydra", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    study = optuna.create_study()
    for trial in sorted(swept.trials, key=lambda t: t.number):
        study.enqueue_trial(trial.params)

    fixed = ["sweeps=mala_standard", f"data.dir={data_dir}", "training.max_epochs=1", THREADS]
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        base = compose(config_name="config", overrides=fixed) if compose_once else None
        for _ in swept.trials:
            trial = study.ask()
            if compose_once:
                cfg = copy.deepcopy(base)
                for name, value in trial.params.items():
                    OmegaConf.update(cfg, name, value)
            else:
                overrides = [format_override(name, value) for name, value in trial.params.items()]
                cfg = compose(config_name="config", overrides=[*fixed, *overrides])
            with open_dict(cfg):
                cfg.pop("hydra", None)
            job_dir = output / str(trial.number)
            job_dir.mkdir(parents=True)
            study.tell(trial, train(cfg, job_dir)["objective"])


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(data_dir: str, trials: int) -> tuple[float, float, float]:
    """Return the wall times in seconds of one sweep, of the bare loop over its trials, and of the compose-once loop."""
    with tempfile.TemporaryDirectory() as scratch:
        sweep = timed([
            sys.executable, str(REPO / "train.py"), "-m", f"data.dir={data_dir}", "sweeps=mala_standard",
            "training.max_epochs=1", THREADS, f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.seed=1",
            f"hydra.sweep.dir={scratch}/sweep"])
        bare = timed([sys.executable, __file__, "--bare", data_dir, f"{scratch}/sweep", f"{scratch}/bare"])
        once = timed([sys.executable, __file__, "--bare-once", data_dir, f"{scratch}/sweep", f"{scratch}/once"])
    return sweep, bare, once


def run(quick: bool) -> list[dict]:
    trials = 3 if quick else TRIALS
    measured = [measure(str(common.be2_data_dir()), trials) for _ in range(1 if quick else ROUNDS)]
    rows = []
    for index, (reference, target) in enumerate((("bare Optuna loop", True),
                                                 ("bare Optuna loop composing the config once", False)), start=1):
        pairs = [(times[0], times[index]) for times in measured]
        ratios = [sweep / bare for sweep, bare in pairs]
        rows.append(common.make_row(
            f"orchestration, {trials} one-epoch TPE trials on mala_standard: train.py -m (SQLite) vs {reference}",
            statistics.median(s for s, _ in pairs), statistics.median(b for _, b in pairs), statistics.median(ratios),
            f"<= {RATIO_TARGET:g}" if target else None, RATIO_TARGET if target else None, "s",
            trials=trials, pairs=len(pairs), ratio_range=[min(ratios), max(ratios)],
            pair_seconds=[[round(s, 2), round(b, 2)] for s, b in pairs],
            overhead_ms_per_trial=statistics.median(s - b for s, b in pairs) / trials * 1000))
    return rows


def main() -> None:
    # The bare loop runs in its own process, started by measure() with --bare.
    if len(sys.argv) == 5 and sys.argv[1] in ("--bare", "--bare-once"):
        run_bare_loop(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), compose_once=sys.argv[1] == "--bare-once")
        return
    common.main(run, __doc__)


if __name__ == "__main__":
    main()
