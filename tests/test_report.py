"""Readable results of a search: progress lines, `malahydra report`, best_config.yaml, plots."""

import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from db_helpers import TEST_PASSWORD, files_containing, postgresql_url  # noqa: F401 -- fixture
from sweeper_apps.runner import QUADRATIC_APP, REPO, TRAIN_SCRIPT, app_env, run_sweep
from malahydra.search import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SAMPLER_PLOTS = ["optimization_history.png", "param_importances.png", "training_curves.png"]
N_TRIALS = 3
TRIAL_LINE = re.compile(r"Trial (\d+) COMPLETE: value (\S+) \(.* s\), best so far (\S+) \(trial (\d+)\); (.*)")


def run_report(sweep_dir: Path, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    executable = shutil.which("malahydra")
    command = [executable] if executable else [sys.executable, "-m", "malahydra.cli"]
    return subprocess.run([*command, "report", str(sweep_dir), *arguments], capture_output=True, text=True,
                          env=app_env(env), timeout=300)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1000, path


@pytest.fixture(scope="module")
def tpe_sweep(tmp_path_factory, be2_dir):
    """A seeded TPE search of three 2-epoch trainings on Be2: its directory and driver output."""
    sweep_dir = tmp_path_factory.mktemp("report") / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, f"data.dir={be2_dir}", "hyper_opt_method=tpe", "sweeps=mala_standard",
                    "hydra.sweeper.seed=5", f"hydra.sweeper.n_trials={N_TRIALS}", "training.max_epochs=2")
    assert run.returncode == 0, run.stderr
    return sweep_dir, run.stdout


def load_study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="malahydra", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def test_sweep_logs_trial_progress(tpe_sweep):
    sweep_dir, output = tpe_sweep
    values = {t.number: t.value for t in load_study(sweep_dir).trials}

    lines = [TRIAL_LINE.search(line) for line in output.splitlines()]
    matches = [m for m in lines if m]
    assert [int(m.group(1)) for m in matches] == list(range(N_TRIALS))
    for match in matches:
        number, best_number = int(match.group(1)), int(match.group(4))
        assert float(match.group(2)) == pytest.approx(values[number], rel=1e-5)
        so_far = {n: v for n, v in values.items() if n <= number}
        assert best_number == min(so_far, key=so_far.get)
        assert float(match.group(3)) == pytest.approx(so_far[best_number], rel=1e-5)
        assert "training.learning_rate=" in match.group(5)
    for complete in range(1, N_TRIALS + 1):
        assert f"Study 'malahydra': {complete}/{N_TRIALS} COMPLETE, 0 FAIL, 0 PRUNED, 0 RUNNING" in output


def test_sweep_end_summary_and_files(tpe_sweep):
    sweep_dir, output = tpe_sweep
    best = load_study(sweep_dir).best_trial

    assert f"Top {N_TRIALS} of {N_TRIALS} COMPLETE trials (minimize):" in output
    table = output[output.index(f"Top {N_TRIALS} of"):].splitlines()
    assert re.search(rf"\]\s+{best.number}\s+{best.value:.6g}\s+{sweep_dir / str(best.number)}\s", table[2])
    # The parameters column lines up below its heading, however long the directories are.
    column = table[1].index("parameters")
    for row in table[2:2 + N_TRIALS]:
        assert row[column - 2:column] == "  ", row
        assert row[column] != " ", row
        assert "=" in row[column:].split(",")[0], row
    assert f"Results: {sweep_dir / 'optimization_results.yaml'}, {sweep_dir / 'trials.csv'}" in output
    # The trials' metrics are in their metrics.json files, not printed into the sweep's output.
    assert '"objective":' not in output
    for name in [*SAMPLER_PLOTS, "best_config.yaml"]:
        assert (sweep_dir / name).is_file(), name


def test_study_readable_with_optuna(tpe_sweep):
    sweep_dir, _ = tpe_sweep
    study = load_study(sweep_dir)

    assert len(study.trials) == N_TRIALS
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert set(trial.params) == {"training.learning_rate", "model.hidden_widths.0", "model.hidden_widths.1",
                                     "model.activations.0", "model.activations.1", "model.output_activation"}
        assert trial.user_attrs["trial_dir"] == str(trial.number)
        assert trial.user_attrs["repeat_values"] == [trial.value]
        assert len(trial.user_attrs["seeds"]) == 1
        assert trial.user_attrs["duration_s"] > 0
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert metrics["objective"] == trial.value
        assert metrics["seed"] == trial.user_attrs["seeds"][0]


@pytest.mark.slow
def test_report_rebuilds_files(tpe_sweep):
    sweep_dir, _ = tpe_sweep
    generated = [*SAMPLER_PLOTS, "best_config.yaml", "optimization_results.yaml", "trials.csv"]
    for name in generated:
        (sweep_dir / name).unlink()

    report = run_report(sweep_dir)

    assert report.returncode == 0, report.stderr
    for name in generated:
        assert (sweep_dir / name).is_file(), name
    for name in SAMPLER_PLOTS:
        assert_png(sweep_dir / name)
    best = load_study(sweep_dir).best_trial
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert summary["best_value"] == best.value
    assert summary["n_complete"] == N_TRIALS
    assert f"{N_TRIALS}/{N_TRIALS} COMPLETE, 0 FAIL, 0 PRUNED, 0 RUNNING" in report.stdout
    first_row = report.stdout.splitlines()[3].split()
    assert first_row[:3] == [str(best.number), f"{best.value:.6g}", str(sweep_dir / str(best.number))]
    assert f"--config-path {sweep_dir} --config-name best_config" in report.stdout


@pytest.mark.slow
def test_best_config_trains_best_trial(tpe_sweep, tmp_path):
    sweep_dir, _ = tpe_sweep
    best = load_study(sweep_dir).best_trial
    config = yaml.safe_load((sweep_dir / "best_config.yaml").read_text())
    assert "trial" not in config
    assert config["training"]["seed"] == best.user_attrs["seeds"][0]

    run_dir = tmp_path / "best"
    run = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--config-path", str(sweep_dir),
                          "--config-name", "best_config", f"hydra.run.dir={run_dir}"],
                         cwd=tmp_path, env=app_env(), capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stderr
    objective = json.loads((run_dir / "metrics.json").read_text())["objective"]
    # Same seed, data and network on the same machine: the training repeats bit for bit.
    assert abs(objective - best.value) <= 1e-12 * abs(best.value)


def test_report_oat_main_effects(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=oat", "x=choice(0.5, 0.0)", "y=choice(2, 0)",
                    "activation=choice(Sigmoid, ReLU)")
    assert run.returncode == 0, run.stderr
    # The quadratic app sets hydra.sweeper.plots=false, so only the report draws.
    assert not (sweep_dir / "oat_main_effects.png").exists()

    report = run_report(sweep_dir)

    assert report.returncode == 0, report.stderr
    assert_png(sweep_dir / "optimization_history.png")
    assert_png(sweep_dir / "oat_main_effects.png")
    assert not (sweep_dir / "param_importances.png").exists()
    assert "Note: training_curves.png not written: no metrics.json in the trial directories." in report.stdout
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert summary["oat"]["predicted_optimum"] == {"x": 0.5, "y": 2, "activation": "ReLU"}


@pytest.mark.postgresql
def test_report_postgresql_from_env(tmp_path, postgresql_url):
    sweep_dir, study = tmp_path / "sweep", f"report_{secrets.token_hex(4)}"
    env = {"MALAHYDRA_POSTGRESQL_URL": postgresql_url}
    run = run_sweep(QUADRATIC_APP, sweep_dir, "storage=postgresql", f"hydra.sweeper.study_name={study}",
                    "hydra.sweeper.n_trials=3", env=env)
    assert run.returncode == 0, run.stderr
    (sweep_dir / "best_config.yaml").unlink()

    report = run_report(sweep_dir, "--no-plots", env=env)

    assert report.returncode == 0, report.stderr
    assert "3/3 COMPLETE" in report.stdout
    assert (sweep_dir / "best_config.yaml").is_file()
    assert TEST_PASSWORD not in report.stdout + report.stderr
    assert files_containing(sweep_dir, TEST_PASSWORD) == []


def test_report_without_multirun_yaml(tmp_path):
    report = run_report(tmp_path)

    assert report.returncode == 1
    assert report.stderr.splitlines() == [
        f"Error: {tmp_path} is not a sweep directory: multirun.yaml not found; pass the hydra.sweep.dir "
        "of a `python train.py -m` run."
    ]


def copy_multirun(source: Path, target: Path, **sweeper: object) -> None:
    """Copy a multirun.yaml into `target`, with some hydra.sweeper settings replaced."""
    config = yaml.safe_load((source / "multirun.yaml").read_text())
    config["hydra"]["sweeper"].update(sweeper)
    target.mkdir()
    (target / "multirun.yaml").write_text(yaml.safe_dump(config))


def test_report_unknown_study(tpe_sweep, tmp_path):
    sweep_dir, _ = tpe_sweep
    storage = {"driver": "sqlite", "path": str(sweep_dir / "optuna.db"), "url_env": None}
    copy_multirun(sweep_dir, tmp_path / "other", study_name="missing", storage=storage)

    report = run_report(tmp_path / "other")

    assert report.returncode == 1
    assert report.stderr.splitlines() == [
        f"Error: Study 'missing' not found in sqlite:///{sweep_dir / 'optuna.db'}; it contains 'malahydra'. "
        "Check hydra.sweeper.study_name in multirun.yaml."
    ]
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["multirun.yaml"]


def test_report_unset_url_variable(tpe_sweep, tmp_path):
    sweep_dir, _ = tpe_sweep
    variable = "MALAHYDRA_REPORT_TEST_URL"
    copy_multirun(sweep_dir, tmp_path / "other", storage={"driver": "url", "path": None, "url_env": variable})

    report = run_report(tmp_path / "other", env={variable: ""})

    assert report.returncode == 1
    assert len(report.stderr.splitlines()) == 1
    assert report.stderr.startswith(f"Error: Environment variable {variable} is not set;")


def test_report_rejects_top_zero(tmp_path):
    report = run_report(tmp_path, "--top", "0")

    assert report.returncode == 1
    assert report.stderr.strip() == "Error: Invalid --top 0; expected an integer >= 1."


def test_report_module_import_is_light():
    # The sweeper imports malahydra.search.report at start-up; matplotlib must wait for the plots.
    code = "import sys, malahydra.search.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_best_config_rewritten_only_on_new_best(tmp_path):
    for number, rate in ((0, 0.1), (1, 0.2)):
        hydra_dir = tmp_path / str(number) / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "config.yaml").write_text(f"training:\n  learning_rate: {rate}\ntrial:\n  number: {number}\n")
    progress = report.SweepProgress("minimize", budget=4)
    summary = {"study_name": "s", "best_trial_number": 0, "best_value": 1.0, "best_trial_dir": str(tmp_path / "0")}
    best_config = tmp_path / report.BEST_CONFIG_FILE

    progress.refresh_best_config(summary, tmp_path)
    first = best_config.read_text()
    best_config.write_text(first + "# edited\n")
    progress.refresh_best_config(dict(summary), tmp_path)

    assert "learning_rate: 0.1" in first
    assert "trial:" not in first
    assert best_config.read_text().endswith("# edited\n")

    progress.refresh_best_config({**summary, "best_trial_number": 1, "best_value": 0.5,
                                  "best_trial_dir": str(tmp_path / "1")}, tmp_path)

    assert "learning_rate: 0.2" in best_config.read_text()


def test_unreadable_best_config_source_warns(tmp_path, caplog):
    hydra_dir = tmp_path / "0" / ".hydra"
    hydra_dir.mkdir(parents=True)
    # As a config.yaml caught halfway through being written.
    (hydra_dir / "config.yaml").write_text("training:\n  learning_rate: [0.1\n")
    summary = {"study_name": "s", "best_trial_number": 0, "best_value": 1.0, "best_trial_dir": str(tmp_path / "0")}

    with caplog.at_level("WARNING", logger=report.__name__):
        report.SweepProgress("minimize", budget=4).refresh_best_config(summary, tmp_path)

    assert not (tmp_path / report.BEST_CONFIG_FILE).exists()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"{report.BEST_CONFIG_FILE} not written"]


def test_best_config_keeps_run_directory(tmp_path):
    hydra_dir = tmp_path / "0" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").write_text("training:\n  learning_rate: 0.1\n")
    summary = {"study_name": "s", "best_trial_number": 0, "best_value": 1.0, "best_trial_dir": str(tmp_path / "0")}

    path = report.write_best_config(summary, tmp_path)

    config = yaml.safe_load(path.read_text())
    assert config["hydra"]["run"]["dir"] == "outputs/runs/${now:%Y-%m-%d_%H-%M-%S}"
    assert "output_directory_check" in config["hydra"]["callbacks"]


def copy_sweep(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for name in SAMPLER_PLOTS:
        (target / name).unlink()
    return target


def test_plot_process_writes_driver_plots(tpe_sweep, tmp_path):
    from malahydra.search import plots
    from malahydra.search.plot_process import PlotProcess

    sweep_dir, _ = tpe_sweep
    study = load_study(sweep_dir)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    in_driver = copy_sweep(sweep_dir, tmp_path / "driver")
    in_helper = copy_sweep(sweep_dir, tmp_path / "helper")

    expected, expected_notes = plots.write_plots(in_driver, summary, study.trials, study)
    written, notes = PlotProcess().write_plots(in_helper, summary, study.trials, study)

    assert [path.name for path in written] == [path.name for path in expected] == SAMPLER_PLOTS
    assert notes == expected_notes
    for path in written:
        assert_png(path)


def test_plot_process_failure_draws_in_driver(tpe_sweep, tmp_path, caplog):
    from malahydra.search.plot_process import PlotProcess

    sweep_dir, _ = tpe_sweep
    study = load_study(sweep_dir)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    target = copy_sweep(sweep_dir, tmp_path / "sweep")
    helper = PlotProcess()
    helper.process.kill()

    written, _ = helper.write_plots(target, summary, study.trials, study)

    assert [path.name for path in written] == SAMPLER_PLOTS
    assert "Plot helper process failed" in caplog.text


def test_plot_process_close_stops_helper():
    from malahydra.search.plot_process import PlotProcess

    helper = PlotProcess()
    process = helper.process

    helper.close()

    assert process.poll() is not None
    assert helper.process is None
