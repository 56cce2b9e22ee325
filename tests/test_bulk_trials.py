"""add_finished_trials on every storage: the same trials as a create_new_trial loop.

SQLite, PostgreSQL and MariaDB take the one-transaction path, and journal and in-memory
storages take the loop. Database tests create their own database (see db_helpers) and
skip without a server unless MALAHYDRA_REQUIRE_SERVICES=1.
"""

import copy
import datetime
import math
import secrets
import subprocess
import sys
import textwrap
import time
import types

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from db_helpers import mysql_url, postgresql_url  # noqa: F401 -- fixtures
from malahydra.search.bulk_trials import add_finished_trials, model_mismatch, rdb_backend
from malahydra.search.storage import open_storage
from sweeper_apps.runner import app_env

URL_VARIABLE = "MALAHYDRA_TEST_BULK_TRIALS_URL"
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
             pytest.param("mysql", marks=pytest.mark.mysql)]
ALL_STORAGES = ["journal", "memory", *DATABASES]
FIELDS = ("number", "state", "values", "params", "distributions", "user_attrs", "system_attrs",
          "intermediate_values", "datetime_start", "datetime_complete")

DISTRIBUTIONS = {
    "layers": IntDistribution(1, 8),
    "width": IntDistribution(16, 1024, log=True),
    "stride": IntDistribution(0, 10, step=2),
    "activation": CategoricalDistribution(["relu", "tanh", None, 1.5, False]),
    "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "momentum": FloatDistribution(0.0, 1.0, step=0.25),
}


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def local_time_zone(monkeypatch):
    """A time zone other than UTC, because Optuna stores datetimes converted to UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_reference(kind: str, tmp_path, monkeypatch, request) -> str:
    if kind == "sqlite":
        return f"sqlite:{tmp_path / 'study.db'}"
    if kind == "journal":
        return f"journal:{tmp_path / 'study.journal'}"
    if kind == "memory":
        return f"memory:bulk_{secrets.token_hex(4)}"
    monkeypatch.setenv(URL_VARIABLE, request.getfixturevalue(f"{kind}_url"))
    return f"env:{URL_VARIABLE}"


@pytest.fixture(params=ALL_STORAGES)
def reference(request, tmp_path, monkeypatch) -> str:
    return make_reference(request.param, tmp_path, monkeypatch, request)


@pytest.fixture(params=DATABASES)
def database_reference(request, tmp_path, monkeypatch) -> str:
    return make_reference(request.param, tmp_path, monkeypatch, request)


def new_study(storage, directions=("minimize",)) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=f"bulk_{secrets.token_hex(6)}", directions=list(directions))


def varied_trials() -> list[FrozenTrial]:
    """Templates with every kind of value that a trial row or one of its child rows stores."""
    params = {"layers": 3, "width": 256, "stride": 4, "activation": None, "learning_rate": 3.2e-4,
              "dropout": 0.125, "momentum": 0.75}
    nested = {"scores": [1.5, None, [2, {"tiny": 1e-300}]], "flags": {"ok": True, "missing": None},
              "big": 2**53 + 1, "text": "Be₂ snapshot \"0\"", "empty": {}}
    india = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    aware_start = datetime.datetime(2024, 3, 10, 1, 59, 59, 123456, tzinfo=india)

    complete = create_trial(value=0.125, params=params, distributions=DISTRIBUTIONS,
                            user_attrs={"naswot_candidate": 17, "driver": "host:4242", **nested},
                            system_attrs={"fixed_params": {"layers": 3}, "grid": [1, 2, 3]})
    failed = create_trial(state=TrialState.FAIL, params={"layers": 1, "activation": "tanh"},
                          distributions={n: DISTRIBUTIONS[n] for n in ("layers", "activation")},
                          user_attrs={"fail_reason": "CUDA out of memory", "driver": "host:4242"})
    pruned = create_trial(state=TrialState.PRUNED, value=2.5, params={"dropout": 0.5, "momentum": 0.0},
                          distributions={n: DISTRIBUTIONS[n] for n in ("dropout", "momentum")},
                          intermediate_values={0: 3.0, 1: float("nan"), 2: float("inf"), 7: float("-inf"), 9: 2.5})
    positive_infinity = create_trial(value=float("inf"), params={"activation": 1.5, "width": 16},
                                     distributions={n: DISTRIBUTIONS[n] for n in ("activation", "width")})
    negative_infinity = create_trial(value=float("-inf"), params={"activation": False},
                                     distributions={"activation": DISTRIBUTIONS["activation"]})
    subnormal = create_trial(value=5e-324, params={"learning_rate": 1e-5},
                             distributions={"learning_rate": DISTRIBUTIONS["learning_rate"]},
                             user_attrs={"value": -0.0})
    bare_failure = create_trial(state=TrialState.FAIL)
    aware = create_trial(value=-1.0, params={"stride": 10}, distributions={"stride": DISTRIBUTIONS["stride"]})
    aware.datetime_start = aware_start
    aware.datetime_complete = aware_start + datetime.timedelta(hours=2)
    return [complete, failed, pruned, positive_infinity, negative_infinity, subnormal, bare_failure, aware]


def naswot_like_trials(count: int, start: int = 0) -> list[FrozenTrial]:
    distributions = {"layers": IntDistribution(1, 4), "width": IntDistribution(8, 64, log=True),
                     "activation": CategoricalDistribution(["relu", "tanh"])}
    return [create_trial(value=float(index), params={"layers": index % 4 + 1, "width": 8, "activation": "relu"},
                         distributions=distributions, user_attrs={"naswot_candidate": index})
            for index in range(start, start + count)]


def comparable(trial: FrozenTrial) -> dict:
    """The fields of a trial, with NaN made equal to itself and the parameter order kept."""
    fields = {name: getattr(trial, name) for name in FIELDS}
    fields["intermediate_values"] = {step: "nan" if math.isnan(value) else value
                                     for step, value in trial.intermediate_values.items()}
    fields["param_order"] = list(trial.params)
    return fields


def assert_same_trials(got: list[FrozenTrial], expected: list[FrozenTrial], context: str) -> None:
    assert len(got) == len(expected), context
    for got_trial, expected_trial in zip(got, expected):
        got_fields, expected_fields = comparable(got_trial), comparable(expected_trial)
        for name in expected_fields:
            assert got_fields[name] == expected_fields[name], f"{context}: trial {expected_trial.number}, field {name}"


def fresh_trials(reference: str, study: optuna.Study) -> list[FrozenTrial]:
    return optuna.load_study(study_name=study.study_name, storage=open_storage(reference)).trials


def test_batch_equals_create_new_trial_loop(reference, local_time_zone):
    storage = open_storage(reference)
    bulk, loop = new_study(storage), new_study(storage)
    # Reads before the writes fill the cache of _CachedStorage, which must then take in the new trials.
    assert storage.get_all_trials(bulk._study_id) == []
    assert storage.get_all_trials(loop._study_id) == []

    templates = varied_trials()
    loop_templates = copy.deepcopy(templates)
    ids = add_finished_trials(storage, bulk._study_id, templates)
    for template in loop_templates:
        storage.create_new_trial(loop._study_id, template_trial=template)

    expected = storage.get_all_trials(loop._study_id)
    assert_same_trials(storage.get_all_trials(bulk._study_id), expected, "cached read")
    assert_same_trials(fresh_trials(reference, bulk), fresh_trials(reference, loop), "fresh read")
    assert_same_trials(fresh_trials(reference, bulk), expected, "fresh read against the cached loop")
    assert [storage.get_trial(trial_id).number for trial_id in ids] == list(range(len(templates)))

    for stored, template in zip(fresh_trials(reference, bulk), templates):
        assert stored.state == template.state
        assert stored.values == template.values
        assert stored.params == template.params
        assert stored.distributions == template.distributions
        assert stored.user_attrs == template.user_attrs
        assert stored.system_attrs == template.system_attrs


def test_multi_objective_values_stored(reference):
    storage = open_storage(reference)
    bulk, loop = (new_study(storage, ("minimize", "maximize")) for _ in range(2))
    templates = [create_trial(values=[1.5, float("-inf")]), create_trial(values=[float("inf"), -2.0]),
                 create_trial(state=TrialState.FAIL)]

    add_finished_trials(storage, bulk._study_id, templates)
    for template in templates:
        storage.create_new_trial(loop._study_id, template_trial=template)

    assert_same_trials(fresh_trials(reference, bulk), fresh_trials(reference, loop), "fresh read")
    assert [t.values for t in bulk.trials] == [[1.5, float("-inf")], [float("inf"), -2.0], None]


def test_numbers_continue_after_existing_trials(reference):
    storage = open_storage(reference)
    study = new_study(storage)
    running = study.ask()
    study.add_trial(naswot_like_trials(1)[0])
    finished_by_tell = study.ask()
    study.tell(finished_by_tell, 7.0)
    assert [t.number for t in storage.get_all_trials(study._study_id)] == [0, 1, 2]

    ids = add_finished_trials(storage, study._study_id, naswot_like_trials(5, start=10))
    assert [storage.get_trial(trial_id).number for trial_id in ids] == [3, 4, 5, 6, 7]
    after = study.ask()
    assert after.number == 8
    study.tell(running, 1.0)

    for context, trials in (("cached", study.trials), ("fresh", fresh_trials(reference, study))):
        assert [t.number for t in trials] == list(range(9)), context
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 8 + [TrialState.RUNNING], context
        assert [t.values for t in trials][3:8] == [[10.0], [11.0], [12.0], [13.0], [14.0]], context
        assert sorted(trials, key=lambda t: t._trial_id) == trials, context


def test_empty_batch_adds_nothing(reference):
    storage = open_storage(reference)
    study = new_study(storage)

    assert add_finished_trials(storage, study._study_id, []) == []
    assert fresh_trials(reference, study) == []


def test_unfinished_trial_rejected(reference):
    storage = open_storage(reference)
    study = new_study(storage)
    templates = naswot_like_trials(2) + [create_trial(state=TrialState.RUNNING)]

    with pytest.raises(ValueError, match="Trial 2 of the batch is RUNNING"):
        add_finished_trials(storage, study._study_id, templates)
    assert fresh_trials(reference, study) == []


def test_incompatible_distribution_adds_nothing(database_reference):
    storage = open_storage(database_reference)
    study = new_study(storage)
    study.add_trial(naswot_like_trials(1)[0])
    changed = create_trial(value=1.0, params={"activation": "gelu"},
                           distributions={"activation": CategoricalDistribution(["relu", "gelu"])})

    with pytest.raises(ValueError, match="Parameter 'activation' of trial 3 of the batch"):
        add_finished_trials(storage, study._study_id, naswot_like_trials(3) + [changed])
    assert len(fresh_trials(database_reference, study)) == 1

    empty = new_study(storage)
    with pytest.raises(ValueError, match="Parameter 'activation' of trial 2 of the batch"):
        add_finished_trials(storage, empty._study_id, naswot_like_trials(2) + [changed])
    assert fresh_trials(database_reference, empty) == []


def test_unknown_study_id_rejected(database_reference):
    storage = open_storage(database_reference)
    study = new_study(storage)

    with pytest.raises(KeyError, match="Study id 999999 not found"):
        add_finished_trials(storage, 999999, naswot_like_trials(2))
    assert fresh_trials(database_reference, study) == []


def test_database_batch_is_one_transaction(database_reference):
    storage = open_storage(database_reference)
    study = new_study(storage)
    engine = rdb_backend(storage).engine
    commits, statements = [], []
    sqlalchemy.event.listen(engine, "commit", lambda connection: commits.append(1))
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    add_finished_trials(storage, study._study_id, naswot_like_trials(200))

    assert len(commits) == 1
    # BEGIN IMMEDIATE on SQLite, lock, count, one distribution query per parameter, one INSERT per table.
    assert len(statements) <= 10, statements
    assert len(fresh_trials(database_reference, study)) == 200


def test_storages_without_database_have_no_backend(tmp_path):
    assert rdb_backend(open_storage(f"journal:{tmp_path / 'study.journal'}")) is None
    assert rdb_backend(open_storage(f"memory:bulk_{secrets.token_hex(4)}")) is None
    assert rdb_backend(open_storage(f"sqlite:{tmp_path / 'study.db'}")) is not None


def test_model_mismatch_detected():
    from optuna.storages._rdb import models

    assert model_mismatch(models) is None

    class Base(sqlalchemy.orm.DeclarativeBase):
        pass

    class TrialParamModel(Base):
        __tablename__ = "trial_params"
        param_id = sqlalchemy.Column(sqlalchemy.Integer, primary_key=True)
        trial_id = sqlalchemy.Column(sqlalchemy.Integer)
        param_name = sqlalchemy.Column(sqlalchemy.String(512))
        param_value = sqlalchemy.Column(sqlalchemy.Float)
        distribution_json = sqlalchemy.Column(sqlalchemy.Text)
        unit = sqlalchemy.Column(sqlalchemy.String(32), nullable=False)

    changed = types.SimpleNamespace(**vars(models))
    changed.TrialParamModel = TrialParamModel
    assert "trial_params" in model_mismatch(changed)
    assert "unit" in model_mismatch(changed)

    del changed.TrialParamModel
    assert model_mismatch(changed) == "TrialParamModel is missing"


WRITER = textwrap.dedent("""
    import sys

    import optuna
    from optuna.distributions import IntDistribution

    from malahydra.search.bulk_trials import add_finished_trials
    from malahydra.search.storage import open_storage

    reference, study_name, mode = sys.argv[1:4]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(reference)
    study_id = optuna.load_study(study_name=study_name, storage=storage)._study_id
    for batch in range(8):
        trials = [optuna.trial.create_trial(value=float(i), params={"x": i}, distributions={"x": IntDistribution(0, 9)})
                  for i in range(5)]
        if mode == "bulk":
            add_finished_trials(storage, study_id, trials)
        else:
            for trial in trials:
                storage.create_new_trial(study_id, template_trial=trial)
""")


def test_concurrent_writers_get_distinct_numbers(database_reference):
    # Two bulk writers and one create_new_trial loop, none holding malahydra's study lock.
    study = new_study(open_storage(database_reference))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, database_reference, study.study_name, mode],
                                env=app_env(), stderr=subprocess.PIPE, text=True)
               for mode in ("bulk", "bulk", "loop")]
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0, 0], errors

    trials = fresh_trials(database_reference, study)
    assert len(trials) == 3 * 8 * 5
    assert [t.number for t in sorted(trials, key=lambda t: t._trial_id)] == list(range(len(trials)))


@pytest.mark.postgresql
def test_lost_commit_acknowledgement_adds_batch_once(postgresql_url, monkeypatch, caplog):
    monkeypatch.setenv(URL_VARIABLE, postgresql_url)
    reference = f"env:{URL_VARIABLE}"
    storage = open_storage(reference)
    study = new_study(storage)
    killer = sqlalchemy.create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
    lost = []

    def commit_then_lose_connection(connection):
        # The batch's commit lands, and then its connection dies before the COMMIT that
        # SQLAlchemy sends next, as when the server's acknowledgement is lost.
        if lost:
            return
        lost.append(True)
        dbapi_connection = connection.connection.dbapi_connection
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        dbapi_connection.commit()
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        with killer.connect() as admin:
            admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})

    sqlalchemy.event.listen(rdb_backend(storage).engine, "commit", commit_then_lose_connection)
    with caplog.at_level("WARNING", logger="malahydra.search.storage"):
        ids = add_finished_trials(storage, study._study_id, naswot_like_trials(20))
    killer.dispose()

    assert lost == [True]
    assert "Transient storage error while adding 20 finished trials" in caplog.text
    trials = fresh_trials(reference, study)
    assert [t.number for t in trials] == list(range(20))
    assert [storage.get_trial(trial_id).number for trial_id in ids] == list(range(20))


def test_memory_storage_trials_independent_of_reads():
    storage = open_storage(f"memory:bulk_{secrets.token_hex(4)}")
    study = optuna.create_study(storage=storage, study_name="independent")
    template = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=1.0, params={"width": 10},
        distributions={"width": CategoricalDistribution((10, 20))}, user_attrs={"values": [1.0]})

    add_finished_trials(storage, study._study_id, [template])
    read = study.get_trials(deepcopy=True)[0]
    read.user_attrs["values"].append(2.0)
    read.params["width"] = 20

    stored = study.get_trials(deepcopy=True)[0]
    assert type(stored) is optuna.trial.FrozenTrial
    assert stored.user_attrs["values"] == [1.0]
    assert stored.params == {"width": 10}
