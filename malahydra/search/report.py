"""Results of a search for people: progress lines, summary table, best_config.yaml, plots.

The sweeper logs one line per finished trial and the trial counts after every batch
(`SweepProgress`), writes `best_config.yaml` after every batch and the plots and the
summary table at the end (`final_report`). `malahydra report SWEEP_DIR` rebuilds the
result files, `best_config.yaml` and the plots from the study at any time
(`report_sweep`), also while the search runs. It only reads the study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import yaml
from optuna.trial import FrozenTrial, TrialState

from . import results
from .errors import SearchConfigError

log = logging.getLogger(__name__)

BEST_CONFIG_FILE = "best_config.yaml"
MULTIRUN_FILE = "multirun.yaml"
TOP_TRIALS = 5
# Config section that the sweeper adds to every job (`+trial.*` overrides), so that the job
# reports to the study. A plain single run must not have it.
TRIAL_SECTION = "trial"


class ReportError(SearchConfigError):
    """A sweep directory or study that `malahydra report` cannot read."""


# -- progress of a running sweep ---------------------------------------------------------


class SweepProgress:
    """Best value so far of a running sweep and the texts of its progress log lines.

    The best value comes from the summary written after each batch and from the trials
    this driver finished since, so a log line costs no storage read.
    """

    def __init__(self, direction: str, budget: int, trials: Sequence[FrozenTrial] = ()) -> None:
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.budget = budget
        self.best_value: float | None = None
        self.best_number: int | None = None
        self.last_warning: str | None = None
        # best_trial_key of the summary whose best_config.yaml was last written.
        self.best_config_key: tuple | None = None
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.value is not None:
                self.note(trial.number, trial.value)

    def note(self, number: int, value: float) -> None:
        """Take the value of a COMPLETE trial into the best value so far."""
        if self.best_value is None or (self.sign * value, number) < (self.sign * self.best_value, self.best_number):
            self.best_value, self.best_number = value, number

    def update(self, summary: dict) -> None:
        """Take the best trial of a summary from `results.summarize`, which reads the trials of all drivers."""
        if summary.get("best_value") is not None and summary.get("best_trial_number") is not None:
            self.note(summary["best_trial_number"], summary["best_value"])

    def best_text(self) -> str:
        if self.best_value is None:
            return "no COMPLETE trial yet"
        return f"best so far {self.best_value:.6g} (trial {self.best_number})"

    def counts_text(self, summary: dict) -> str:
        """Return e.g. '12/20 COMPLETE, 1 FAIL, 0 PRUNED, 2 RUNNING' from a summary."""
        return counts_text(summary, self.budget)

    def refresh_best_config(self, summary: dict, sweep_dir: Path) -> None:
        """Rewrite best_config.yaml when the best trial changed; log a failure as a warning, each distinct one once."""
        key = best_trial_key(summary)
        if key == self.best_config_key and (Path(sweep_dir) / BEST_CONFIG_FILE).is_file():
            return
        try:
            if write_best_config(summary, sweep_dir) is not None:
                self.best_config_key = key
        except (ReportError, OSError, ValueError, yaml.YAMLError) as error:
            message = f"{BEST_CONFIG_FILE} not written: {error}"
            if message != self.last_warning:
                log.warning("%s", message)
            self.last_warning = message


def best_trial_key(summary: dict) -> tuple:
    """Identify the run that best_config.yaml is taken from, for NASWOT too."""
    naswot = summary.get("naswot") or {}
    return (
        summary.get("best_trial_number"),
        summary.get("best_value"),
        (naswot.get("best_trained") or {}).get("trial_number"),
        (naswot.get("selected") or {}).get("trial_number"),
    )


def counts_text(summary: dict, budget: int | None) -> str:
    complete = f"{summary['n_complete']}/{budget}" if budget is not None else str(summary["n_complete"])
    return (f"{complete} COMPLETE, {summary['n_failed']} FAIL, {summary['n_pruned']} PRUNED, "
            f"{summary['n_running']} RUNNING")


def params_text(params: dict) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in params.items())


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- best_config.yaml --------------------------------------------------------------------


@dataclass
class ConfigSource:
    """Source of the best configuration: a job's composed config plus parameters to set."""

    config_file: Path
    params: dict
    description: str


def best_config_source(summary: dict) -> ConfigSource | None:
    """Return the composed config of the best run, or None while no trial is COMPLETE.

    For NASWOT it is the best trained candidate (`train_top_k`), else the best-scoring
    candidate: the config of its scoring job with the candidate's parameters set.
    """
    naswot = summary.get("naswot") if summary.get("method") == "naswot" else None
    if naswot is not None and naswot.get("best_trained"):
        row = naswot["best_trained"]
        job_dir, params = row["trial_dir"], {}
        description = f"NASWOT candidate {row['trial_number']} trained to objective {format_value(row['objective'])}"
    elif naswot is not None:
        selected = naswot.get("selected")
        if selected is None or summary.get("best_trial_dir") is None:
            return None
        job_dir, params = summary["best_trial_dir"], dict(selected["params"])
        description = f"NASWOT candidate {selected['trial_number']} (score {format_value(selected['score'])}, untrained)"
    else:
        if summary.get("best_trial_dir") is None:
            return None
        job_dir, params = summary["best_trial_dir"], {}
        description = f"trial {summary['best_trial_number']} (value {format_value(summary['best_value'])})"

    # A trial with several trainings keeps one job directory per repeat; repeat 0 stands for it.
    for candidate in (Path(job_dir), Path(job_dir) / "repeat_0"):
        config_file = candidate / ".hydra" / "config.yaml"
        if config_file.is_file():
            return ConfigSource(config_file, params, description)
    raise ReportError(
        f"The config of the best run is missing: no .hydra/config.yaml in {job_dir}; "
        "the job directory was moved or deleted, or the job ran on a host that does not share this directory."
    )


def write_best_config(summary: dict, sweep_dir: Path) -> Path | None:
    """Write `best_config.yaml`: the best run's composed config without the `trial` section.

    It trains as a single run with `python train.py --config-path SWEEP_DIR --config-name
    best_config`. The source is a job's `.hydra/config.yaml`, which contains no database URL
    (jobs get the name of the URL's environment variable), so neither does this file.
    Returns None, and writes nothing, while no trial is COMPLETE.
    """
    from omegaconf import OmegaConf

    source = best_config_source(summary)
    if source is None:
        return None
    config = OmegaConf.load(source.config_file)
    config.pop(TRIAL_SECTION, None)
    for key, value in source.params.items():
        OmegaConf.update(config, key, value, force_add=True)
    # A job's saved config has no `hydra` section, so without these settings of the root
    # config the run would go to Hydra's outputs/<date>/<time> instead of outputs/runs/.
    config.hydra = run_settings_of_root_config()

    sweep_dir = Path(sweep_dir).resolve()
    header = [
        f"# Composed config of {source.description} of study {summary['study_name']!r},",
        f"# from {source.config_file}, without the search-only `{TRIAL_SECTION}` section.",
        f"# Train it as a single run: {best_config_command(sweep_dir)}",
    ]
    if source.config_file.parent.parent.name == "repeat_0":
        header.append("# The trial's value combines several trainings; this config has the seed of the first one.")
    path = sweep_dir / BEST_CONFIG_FILE
    results.replace_text(path, "\n".join(header) + "\n" + OmegaConf.to_yaml(config))
    return path


def run_settings_of_root_config() -> dict:
    """Return the `hydra.run` and `hydra.callbacks` settings of the packaged conf/config.yaml, unresolved."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    root = OmegaConf.create(files("malahydra.conf").joinpath("config.yaml").read_text())
    return OmegaConf.to_container(OmegaConf.masked_copy(root.hydra, ["run", "callbacks"]), resolve=False)


def best_config_command(sweep_dir: Path) -> str:
    return f"python train.py --config-path {Path(sweep_dir).resolve()} --config-name {Path(BEST_CONFIG_FILE).stem}"


# -- summary table -----------------------------------------------------------------------


def ranked_trials(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """COMPLETE trials from best to worst value, lower numbers first on ties."""
    sign = 1.0 if direction == "minimize" else -1.0
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(complete, key=lambda t: (sign * t.value, t.number))


def job_directory(trial: FrozenTrial, sweep_dir: Path, method: str | None) -> str:
    subdir = trial.user_attrs.get("trial_dir")
    if subdir is None and method == "naswot":
        from .naswot import JOB_DIR_ATTR

        subdir = trial.user_attrs.get(JOB_DIR_ATTR)
    return "-" if subdir is None else str(Path(sweep_dir).resolve() / subdir)


def summary_table(summary: dict, trials: Sequence[FrozenTrial], sweep_dir: Path, top: int = TOP_TRIALS) -> list[str]:
    """Lines of a table of the `top` best COMPLETE trials: number, value, directory, parameters."""
    ranked = ranked_trials(trials, summary["direction"])[:top]
    if not ranked:
        return ["No COMPLETE trial yet."]
    value_name = "score" if summary.get("method") == "naswot" else "value"
    directories = [job_directory(trial, sweep_dir, summary.get("method")) for trial in ranked]
    width = max(len("directory"), *map(len, directories))
    lines = [f"Top {len(ranked)} of {summary['n_complete']} COMPLETE trials ({summary['direction']}):",
             f"{'trial':>6}  {value_name:>12}  {'directory':<{width}}  parameters"]
    for trial, directory in zip(ranked, directories):
        lines.append(f"{trial.number:>6}  {trial.value:>12.6g}  {directory:<{width}}  {params_text(trial.params)}")
    return lines


@dataclass
class Report:
    """Files a report wrote, and its text for the log or the terminal."""

    sweep_dir: Path
    best_config: Path | None = None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def write_report(
    study: Any, trials: Sequence[FrozenTrial], summary: dict, sweep_dir: Path, budget: int | None,
    *, top: int = TOP_TRIALS, plots: bool = True, plotter: Any = None,
) -> Report:
    """Write `best_config.yaml` and the plots, and build the summary text.

    A failure of either is a note in the report, never an exception: a report must not
    fail the search whose results it shows.
    """
    sweep_dir = Path(sweep_dir).resolve()
    report = Report(sweep_dir)
    try:
        report.best_config = write_best_config(summary, sweep_dir)
        if report.best_config is None:
            report.notes.append(f"{BEST_CONFIG_FILE} not written: no COMPLETE trial yet.")
    except (ReportError, OSError, ValueError) as error:
        report.notes.append(f"{BEST_CONFIG_FILE} not written: {error}")
    if plots:
        # `plotter`: an object with a `write_plots` like plots.write_plots, such as a PlotProcess.
        if plotter is None:
            from . import plots as plotter

        report.plots, plot_notes = plotter.write_plots(sweep_dir, summary, trials, study)
        report.notes += plot_notes

    report.lines = [
        f"Study {summary['study_name']!r} in {summary['storage']}: {counts_text(summary, budget)}.",
        *summary_table(summary, trials, sweep_dir, top),
        f"Results: {sweep_dir / results.RESULTS_FILE}, {sweep_dir / results.TRIALS_FILE}",
    ]
    if report.best_config is not None:
        report.lines.append(f"Best config: {report.best_config}; train it with {best_config_command(sweep_dir)}")
    if report.plots:
        report.lines.append("Plots: " + ", ".join(str(path) for path in report.plots))
    return report


def final_report(sweeper: Any, summary: dict) -> None:
    """Log the summary table and write `best_config.yaml` and the plots at the end of a sweep."""
    try:
        trials = sweeper.study.get_trials(deepcopy=False)
        report = write_report(sweeper.study, trials, summary, sweeper.sweep_dir, sweeper.budget,
                              plots=bool(sweeper.settings.get("plots", True)), plotter=sweeper.plot_process)
    except Exception as error:  # noqa: BLE001 -- the results are written; a report error must not fail the sweep
        log.warning("Writing the report of study %r failed (%s: %s); run `malahydra report %s` to retry.",
                    summary.get("study_name"), type(error).__name__, error, sweeper.sweep_dir)
        return
    for note in report.notes:
        log.info("%s", note)
    # One record per line, so every line of the table carries the log prefix.
    for line in report.lines:
        log.info("%s", line)


# -- `malahydra report SWEEP_DIR` ----------------------------------------------------------


@dataclass
class SweepSettings:
    """The sweeper settings of a sweep directory, as its driver resolved them."""

    settings: dict
    arguments: list[str]


def read_sweep_settings(sweep_dir: Path) -> SweepSettings:
    """Read `hydra.sweeper` and the command-line overrides from SWEEP_DIR/multirun.yaml.

    `${hydra.sweep.dir}` resolves to `sweep_dir`, so a moved sweep directory still finds
    the study file inside it. A relative storage path is taken from the directory the
    driver was started in (`hydra.runtime.cwd`), as the driver did.
    """
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.is_file():
        raise ReportError(
            f"{Path(sweep_dir)} is not a sweep directory: {MULTIRUN_FILE} not found; pass the hydra.sweep.dir "
            "of a `python train.py -m` run."
        )
    try:
        config = OmegaConf.load(path)
        with open_dict(config):
            config.hydra.sweep.dir = str(Path(sweep_dir).resolve())
        settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        arguments = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        driver_cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
    except (OmegaConfBaseException, AttributeError) as error:
        raise ReportError(f"Cannot read the sweeper settings from {path}: {str(error).splitlines()[0]}.") from None

    storage = settings.get("storage") or {}
    if storage.get("path") and not Path(storage["path"]).expanduser().is_absolute():
        storage["path"] = str(Path(driver_cwd or ".") / Path(storage["path"]).expanduser())
    return SweepSettings(settings, arguments)


def open_study_readonly(settings: dict) -> tuple[Any, str]:
    """Return the study that the settings name and its storage's description for logs.

    Rejects a missing storage file or study instead of creating them.
    """
    import optuna

    from .storage import describe_storage, open_storage, storage_reference

    study_name = settings["study_name"]
    reference = storage_reference(settings["storage"], study_name)
    kind, _, value = reference.partition(":")
    if kind == "memory":
        raise ReportError(
            f"Study {study_name!r} was kept in memory (storage=memory) and ended with its driver; "
            "only the result files the driver wrote remain. Use storage=sqlite to report a search later."
        )
    if kind in ("sqlite", "journal") and not Path(value).is_file():
        raise ReportError(f"The study file {value} does not exist; check hydra.sweeper.storage.path in {MULTIRUN_FILE}.")
    storage = open_storage(reference)
    names = [summary.study_name for summary in storage.get_all_studies()]
    if study_name not in names:
        raise ReportError(
            f"Study {study_name!r} not found in {describe_storage(reference)}; it contains "
            f"{', '.join(repr(n) for n in names) or 'no study'}. Check hydra.sweeper.study_name in {MULTIRUN_FILE}."
        )
    return optuna.load_study(study_name=study_name, storage=storage), describe_storage(reference)


def report_sweep(sweep_dir: Path, *, top: int = TOP_TRIALS, plots: bool = True) -> Report:
    """Rebuild the result files, `best_config.yaml` and the plots of a sweep from its study.

    Reads the study and changes none of its trials, so it may run while drivers search.
    """
    from .fixed_configs import method_for
    from .space import build_search_space, parse_overrides
    from .sweeper import effective_budget

    sweep_dir = Path(sweep_dir).resolve()
    sweep = read_sweep_settings(sweep_dir)
    settings = sweep.settings
    study, storage_text = open_study_readonly(settings)

    # The method and budget come from the same settings and overrides the driver had.
    method = method_for(settings)
    sweeps, _ = parse_overrides(settings.get("params") or {}, sweep.arguments)
    space = build_search_space(sweeps)
    if method is not None:
        method.prepare(space)
    else:
        budget = effective_budget(settings["n_trials"], settings["sampler"], space)

    trials = study.get_trials(deepcopy=False)
    summary = results.summarize(trials, direction=settings["direction"], study_name=settings["study_name"],
                                sweep_dir=sweep_dir, storage=storage_text)
    extra_summary, extra_columns = {}, {}
    if method is not None:
        extra_summary, extra_columns = method.results(SimpleNamespace(study=study, sweep_dir=sweep_dir), trials)
        # After `results`, because OAT drops its confirmation trial when the optimum is a row.
        budget = method.budget
    summary.update(extra_summary)
    results.write_results(summary, trials, sweep_dir, extra_columns=extra_columns)
    return write_report(study, trials, summary, sweep_dir, budget, top=top, plots=plots)

