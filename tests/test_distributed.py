"""Several drivers on one study, on SQLite, journal file, PostgreSQL and MariaDB.

Each driver is its own `python distributed_helpers.py -m` process with the in-process
launcher, so killing a driver kills its running trial. Database tests create their own
database and skip without a server unless MALAHYDRA_REQUIRE_SERVICES=1.
"""

import random
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from db_helpers import mysql_url, postgresql_url, storage  # noqa: F401 -- fixtures
from distributed_helpers import (
    APP,
    driver_env,
    driver_output,
    failed_index,
    fixed_configs,
    fresh_database,
    log_counts,
    read_log,
    start_drivers,
    unique_name,
    wait_all,
)
from malahydra.search.claims import first_job_index
from malahydra.search.heartbeat import HEARTBEAT_ATTR, Heartbeat
from malahydra.search.storage import load_or_create_study, open_storage
from malahydra.search.study_admin import repair_stale_trials, stale_trials
from malahydra.training.devices import cuda_index
from sweeper_apps.runner import URL_VARIABLES, storage_reference

N_CONFIGS = 60
N_DRIVERS = 4
LIVENESS = ("hydra.sweeper.heartbeat_interval=0.5", "hydra.sweeper.grace_period=3")
TIMEOUT_S = 120


def driver_options(storage: str, study: str, *extra: str) -> list[str]:
    return [f"storage={storage}", f"hydra.sweeper.study_name={study}", "hydra.sweeper.seed=3", *LIVENESS, *extra]


def enqueue_concurrently(reference: str, study: str, count: int, processes: int) -> None:
    """Enqueue the same `count` fixed configurations from `processes` processes at one instant."""
    code = (
        "import sys, time; sys.path.insert(0, {repo!r}); "
        "from malahydra.search.storage import load_or_create_study; "
        "from malahydra.search.fixed_configs import enqueue_missing; "
        "from distributed_helpers import fixed_configs; "
        "study = load_or_create_study({ref!r}, {study!r}, 'minimize', None, None); "
        "time.sleep(max(0.0, {start!r} - time.time())); "
        "enqueue_missing(study, fixed_configs({count}))"
    ).format(repo=str(APP.parents[1]), ref=reference, study=study, start=time.time() + 3.0, count=count)
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=APP.parent, env=driver_env(),
                             stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for run in runs:
        _, error = run.communicate(timeout=TIMEOUT_S)
        assert run.returncode == 0, error


def load_study(reference: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(reference))


def complete_xs(trials) -> Counter:
    return Counter(t.params["x"] for t in trials if t.state == TrialState.COMPLETE)


def test_fixed_configs_each_once(tmp_path, storage):
    sweep_dir, log_file, study = tmp_path / "sweep", tmp_path / "eval.log", unique_name("fixed")
    reference = storage_reference(storage, sweep_dir, study)
    enqueue_concurrently(reference, study, N_CONFIGS, N_DRIVERS)
    assert len(load_study(reference, study).get_trials(states=(TrialState.WAITING,))) == N_CONFIGS

    drivers = start_drivers(N_DRIVERS, sweep_dir, log_file,
                            *driver_options(storage, study, f"hydra.sweeper.n_trials={N_CONFIGS}"))
    codes = wait_all(drivers, TIMEOUT_S)

    assert codes == [0] * N_DRIVERS, driver_output(sweep_dir, failed_index(codes))
    trials = load_study(reference, study).get_trials()
    expected = {config["x"] for config in fixed_configs(N_CONFIGS)}
    assert len(trials) == N_CONFIGS
    assert complete_xs(trials) == Counter(expected)
    assert log_counts(log_file) == Counter(expected)
    assert len({row.pid for row in read_log(log_file)}) > 1


def test_killed_driver_nothing_lost(tmp_path, storage):
    sweep_dir, log_file, study = tmp_path / "sweep", tmp_path / "eval.log", unique_name("killed")
    reference = storage_reference(storage, sweep_dir, study)
    enqueue_concurrently(reference, study, N_CONFIGS, 1)
    drivers = start_drivers(N_DRIVERS, sweep_dir, log_file, *driver_options(
        storage, study, f"hydra.sweeper.n_trials={N_CONFIGS}", "epochs=3", "step_s=0.03"))

    kill_after = random.randint(5, N_CONFIGS // 2)
    deadline = time.monotonic() + TIMEOUT_S
    while len(read_log(log_file)) < kill_after and time.monotonic() < deadline and drivers[0].poll() is None:
        time.sleep(0.01)
    drivers[0].send_signal(signal.SIGKILL)
    # Reaping it matters: a zombie still has a pid, so it would look alive to the others.
    killed = drivers[0].wait()
    codes = wait_all(drivers[1:], TIMEOUT_S)

    assert killed == -signal.SIGKILL
    assert codes == [0] * (N_DRIVERS - 1), driver_output(sweep_dir, failed_index(codes, first=1))
    trials = load_study(reference, study).get_trials()
    expected = Counter(config["x"] for config in fixed_configs(N_CONFIGS))
    assert complete_xs(trials) == expected
    assert [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == []
    retried = {t.params["x"] for t in trials if t.user_attrs.get("retries")}
    assert len(retried) <= 1
    counts = log_counts(log_file)
    assert set(counts) == set(expected)
    assert {x for x, n in counts.items() if n > 1} <= retried


def test_tpe_budget_exact(tmp_path, storage):
    sweep_dir, log_file, study = tmp_path / "sweep", tmp_path / "eval.log", unique_name("budget")
    drivers = start_drivers(N_DRIVERS, sweep_dir, log_file, *driver_options(storage, study, "hydra.sweeper.n_trials=20"))
    codes = wait_all(drivers, TIMEOUT_S)

    assert codes == [0] * N_DRIVERS, driver_output(sweep_dir, failed_index(codes))
    trials = load_study(storage_reference(storage, sweep_dir, study), study).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 20
    assert len(trials) == 20
    assert len(read_log(log_file)) == 20


@pytest.mark.parametrize("service", ["sqlite", "journal",
                                     pytest.param("postgresql", marks=pytest.mark.postgresql),
                                     pytest.param("mysql", marks=pytest.mark.mysql)])
def test_simultaneous_start_fresh_database(tmp_path, monkeypatch, service):
    drop = None
    if service in URL_VARIABLES:
        url, drop = fresh_database(service)
        monkeypatch.setenv(URL_VARIABLES[service], url)
    reference = storage_reference(service, tmp_path, "start")
    start_at = time.time() + 4.0
    code = (f"import sys; sys.path.insert(0, {str(APP.parent)!r}); from distributed_helpers import create_study_at; "
            f"create_study_at({reference!r}, 'start', {start_at!r})")
    try:
        runs = [subprocess.Popen([sys.executable, "-c", code], env=driver_env(), stderr=subprocess.PIPE, text=True)
                for _ in range(8)]
        errors = [run.communicate(timeout=TIMEOUT_S)[1] for run in runs]
        assert [run.returncode for run in runs] == [0] * 8, "\n".join(errors)
        assert len(load_study(reference, "start").get_trials(states=(TrialState.COMPLETE,))) == 8
    finally:
        if drop is not None:
            drop()


def test_ranks_on_node_distinct_gpus(tmp_path):
    sweep_dir, log_file, study = tmp_path / "sweep", tmp_path / "eval.log", unique_name("ranks")
    envs = [{"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS_PER_NODE": "2"} for rank in (0, 1)]
    drivers = start_drivers(2, sweep_dir, log_file, *driver_options("sqlite", study, "hydra.sweeper.n_trials=8",
                                                                    "step_s=0.05"), envs=envs)
    assert wait_all(drivers, TIMEOUT_S) == [0, 0]

    import yaml

    gpus_of_driver: dict[str, set] = {}
    for trial in load_study(storage_reference("sqlite", sweep_dir, study), study).get_trials():
        hydra_config = yaml.safe_load((sweep_dir / trial.user_attrs["trial_dir"] / ".hydra" / "hydra.yaml").read_text())
        gpu = cuda_index(2, int(hydra_config["hydra"]["job"]["num"]), {})
        gpus_of_driver.setdefault(trial.user_attrs["driver"], set()).add(gpu)
    assert sorted(map(sorted, gpus_of_driver.values())) == [[0], [1]]


def test_first_job_index_interleaves_ranks():
    node = {"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    numbers = [first_job_index(batch, 2, {**node, "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)}) + job
               for rank in range(4) for batch in range(3) for job in range(2)]
    assert len(set(numbers)) == len(numbers)
    for batch in range(3):
        concurrent = [first_job_index(batch, 2, {**node, "OMPI_COMM_WORLD_LOCAL_RANK": str(r)}) + j
                      for r in range(4) for j in range(2)]
        assert sorted(n % 8 for n in concurrent) == list(range(8))
    assert first_job_index(3, 2, {}) == 6


def test_heartbeat_thread_beats(tmp_path):
    study = load_or_create_study(f"journal:{tmp_path / 'study.journal'}", "beat", "minimize", None, None)
    trial = study.ask()
    with Heartbeat(study._storage, [trial._trial_id], interval=0.2):
        first = study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
        time.sleep(0.7)
        last = study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
    assert last - first >= 0.35
    assert stale_trials(study, grace_period=5.0) == []


def test_heartbeat_without_start_beat(tmp_path):
    study = load_or_create_study(f"journal:{tmp_path / 'study.journal'}", "quiet", "minimize", None, None)
    trial = study.ask()
    with Heartbeat(study._storage, [trial._trial_id], interval=0.3, beat_at_start=False):
        assert HEARTBEAT_ATTR not in study._storage.get_trial(trial._trial_id).system_attrs
        time.sleep(0.6)
        assert HEARTBEAT_ATTR in study._storage.get_trial(trial._trial_id).system_attrs


def _remote_stale_trial(study: optuna.Study, age_s: float, retries: int = 0) -> optuna.Trial:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(-1, 1),
                       "y": optuna.distributions.IntDistribution(0, 4)})
    trial.set_user_attr("driver", "some-other-host:4242:1")
    trial.set_user_attr("trial_dir", str(trial.number))
    trial.set_user_attr("retries", retries)
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - age_s)
    return trial


def test_stale_remote_trial_retried_in_its_dir(tmp_path, storage):
    sweep_dir, log_file, study_name = tmp_path / "sweep", tmp_path / "eval.log", unique_name("stale")
    reference = storage_reference(storage, sweep_dir, study_name)
    study = load_or_create_study(reference, study_name, "minimize", None, None)
    stale = _remote_stale_trial(study, age_s=600)
    (sweep_dir / str(stale.number)).mkdir(parents=True)
    # The original got through epoch 0 before its driver vanished.
    (sweep_dir / str(stale.number) / "checkpoint.json").write_text('{"epoch": 0}')

    drivers = start_drivers(1, sweep_dir, log_file, *driver_options(storage, study_name, "hydra.sweeper.n_trials=3"))
    assert wait_all(drivers, TIMEOUT_S) == [0], driver_output(sweep_dir, 0)

    trials = load_study(reference, study_name).get_trials()
    original = trials[stale.number]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == stale.number)
    assert original.state == TrialState.FAIL
    assert original.user_attrs["fail_reason"].startswith("heartbeat lost")
    assert retry.state == TrialState.COMPLETE
    assert retry.params == original.params
    assert retry.user_attrs["trial_dir"] == str(stale.number)
    assert retry.user_attrs["retries"] == 1
    assert [row.trial_dir for row in read_log(log_file)].count(str(stale.number)) == 1


def test_stale_trial_max_retries_fail(tmp_path):
    study = load_or_create_study(f"sqlite:{tmp_path / 'optuna.db'}", "retries", "minimize", None, None)
    stale = _remote_stale_trial(study, age_s=600, retries=2)
    repairs = repair_stale_trials(study, study_lock_of(study), grace_period=60, max_retries=2)

    assert [r.retry_number for r in repairs] == [None]
    frozen = study.get_trials()
    assert [t.state for t in frozen] == [TrialState.FAIL]
    assert "max_retries=2 reached" in frozen[stale.number].user_attrs["fail_reason"]


def study_lock_of(study):
    from malahydra.search.claims import study_lock

    return study_lock(study)


def test_wrong_password_one_line(tmp_path, monkeypatch, mysql_url):  # noqa: F811 -- fixture
    from sqlalchemy.engine import make_url

    wrong = make_url(mysql_url).set(password="Wrong-" + unique_name("pw")).render_as_string(hide_password=False)
    password = make_url(wrong).password
    run = subprocess.run([sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                          f"log_file={tmp_path / 'eval.log'}", "storage=mysql"],
                         env=driver_env({"MALAHYDRA_MYSQL_URL": wrong}), capture_output=True, text=True, timeout=60)

    first_line = run.stderr.splitlines()[0]
    assert run.returncode == 1
    assert first_line.startswith("Error: Cannot open the study database mysql+pymysql://")
    assert "Access denied" in first_line
    assert "Traceback" not in run.stderr
    assert password not in run.stdout + run.stderr


def test_unreachable_postgresql_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                          f"log_file={tmp_path / 'eval.log'}", "storage=postgresql"],
                         env=driver_env({"MALAHYDRA_POSTGRESQL_URL": "postgresql+psycopg2://u:Secret-9x@127.0.0.1:1/none"}),
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 1
    assert run.stderr.startswith("Error: Cannot open the study database postgresql+psycopg2://u:***@127.0.0.1:1/none")
    assert "Traceback" not in run.stderr
    assert "Secret-9x" not in run.stdout + run.stderr
