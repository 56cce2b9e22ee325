"""Add many finished trials to an Optuna study in one database transaction.

Optuna 5.1 has no batch insert. `create_new_trial(study_id, template_trial=...)` runs one
transaction and a dozen statements per trial, which takes milliseconds per trial even on
a local SQLite file. `add_finished_trials` writes a whole batch to an RDB storage in one
transaction, with one INSERT statement per table of Optuna's schema
(`optuna.storages._rdb.models`) executed for all rows at once. It writes the same rows
and values as `RDBStorage._create_new_trial` in Optuna 5.1: JSON of distributions and
attributes, internal parameter values, infinite values as NULL plus a value type, and
datetimes in Optuna's stored form. Journal and in-memory storages get a loop of
`create_new_trial`, and so does an RDB storage whose models differ from the ones this
module was written for (see `model_mismatch`).

Concurrency: the caller holds the study lock (`claims.study_lock`), so no other driver
of malahydra adds trials to the study meanwhile. The numbers are still counted inside
the transaction, under a lock that Optuna's own `create_new_trial` also waits for: the
study row lock (`SELECT ... FOR UPDATE`) on PostgreSQL and MySQL, and the SQLite write
lock (`BEGIN IMMEDIATE`). So a process that adds trials through Optuna without the
study lock at the same time still gets distinct numbers.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Sequence

import optuna
from optuna import distributions
from optuna.storages import BaseStorage, RDBStorage, _CachedStorage
from optuna.trial import FrozenTrial

from .storage import RetryingStorage, retry_transient

log = logging.getLogger(__name__)

# Columns of each table of Optuna 5.1's schema that this module writes, including the
# primary key. A table with other columns makes the module fall back to the loop.
EXPECTED_COLUMNS = {
    "TrialModel": {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"},
    "TrialParamModel": {"param_id", "trial_id", "param_name", "param_value", "distribution_json"},
    "TrialValueModel": {"trial_value_id", "trial_id", "objective", "value", "value_type"},
    "TrialIntermediateValueModel": {"trial_intermediate_value_id", "trial_id", "step", "intermediate_value",
                                    "intermediate_value_type"},
    "TrialUserAttributeModel": {"trial_user_attribute_id", "trial_id", "key", "value_json"},
    "TrialSystemAttributeModel": {"trial_system_attribute_id", "trial_id", "key", "value_json"},
}
# Optuna's conversions of a float to its stored value and value type.
EXPECTED_METHODS = {
    "TrialValueModel": "value_to_stored_repr",
    "TrialIntermediateValueModel": "intermediate_value_to_stored_repr",
}


def add_finished_trials(storage: BaseStorage, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    """Add finished trials to a study and return their trial ids, in the order of `trials`.

    Each trial is a template as `storage.create_new_trial(study_id, template_trial=...)`
    takes it. Its state must be COMPLETE, FAIL or PRUNED. Its number and trial id are
    ignored: the k-th trial (from 0) gets the number `n + k`, where n is the number of
    trials that the study had before.

    On an RDB storage the batch is added in one transaction, so either all trials are
    added or none. On other storages the trials are added one by one, and an error
    leaves the trials before it added. An in-memory storage keeps the params,
    distributions and attribute dicts of `trials` themselves, so do not change them
    after the call. Call it under the study lock when other drivers may add trials,
    because a retry after a lost connection relies on it (see `_batch_is_stored`).

    Raises ValueError, before anything is written, for an unfinished trial. Like
    `create_new_trial`, it raises ValueError for a parameter distribution that is
    incompatible with the one the study stores for the same parameter name, and KeyError
    for an unknown study id.
    """
    for position, trial in enumerate(trials):
        if not trial.state.is_finished():
            raise ValueError(
                f"Trial {position} of the batch is {trial.state.name}, not finished; add only COMPLETE, FAIL or "
                "PRUNED trials, or add it with storage.create_new_trial."
            )
    if not trials:
        return []

    backend = rdb_backend(storage)
    models = optuna_models() if backend is not None else None
    if backend is None or models is None:
        return [storage.create_new_trial(study_id, template_trial=_HandedOverTrial(trial)) for trial in trials]
    return _add_to_database(backend, models, study_id, trials)


class _HandedOverTrial(FrozenTrial):
    """A template whose deep copy takes over its fields instead of copying them.

    Optuna's InMemoryStorage stores a deep copy of each template, and deep-copying the
    distributions and attributes took longer than scoring a NASWOT candidate. The copy
    is a plain FrozenTrial, so the storage's later deep copies (`get_trials`) copy as usual.
    """

    def __init__(self, trial: FrozenTrial) -> None:  # noqa: D107 -- the fields of `trial`, not copied
        self.__dict__.update(trial.__dict__)

    def __deepcopy__(self, memo: dict) -> FrozenTrial:
        copied = FrozenTrial.__new__(FrozenTrial)
        copied.__dict__.update(self.__dict__)
        return copied


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """Return the RDBStorage inside malahydra's and Optuna's wrappers, or None for other storages."""
    while True:
        if isinstance(storage, RDBStorage):
            return storage
        if isinstance(storage, RetryingStorage):
            storage = storage._inner
        elif isinstance(storage, _CachedStorage):
            storage = storage._backend
        else:
            return None


def model_mismatch(models: Any) -> str | None:
    """Describe how Optuna's ORM models differ from the ones this module writes, or return None."""
    for name, expected in EXPECTED_COLUMNS.items():
        model = getattr(models, name, None)
        table = getattr(model, "__table__", None)
        if table is None:
            return f"{name} is missing"
        columns = {column.name for column in table.columns}
        if columns != expected:
            return f"table {table.name} has the columns {sorted(columns)}, not {sorted(expected)}"
    for name, method in EXPECTED_METHODS.items():
        if not callable(getattr(getattr(models, name), method, None)):
            return f"{name}.{method} is missing"
    # The stored form of a datetime comes from these TrialModel attributes (see _datetime_converter).
    for name in ("datetime_start", "datetime_complete"):
        if not hasattr(models.TrialModel, name):
            return f"TrialModel.{name} is missing"
    study_table = getattr(getattr(models, "StudyModel", None), "__table__", None)
    if study_table is None or "study_id" not in study_table.columns:
        return "StudyModel or its study_id column is missing"
    return None


@functools.cache
def optuna_models() -> Any:
    """Return Optuna's ORM models module, or None (logged once) when it differs from the expected one."""
    try:
        from optuna.storages._rdb import models
    except ImportError as error:
        problem = f"optuna.storages._rdb.models cannot be imported ({error})"
    else:
        problem = model_mismatch(models)
        if problem is None:
            return models
    log.warning("Optuna %s's database schema is not the one malahydra writes directly (%s); adding finished "
                "trials one by one with create_new_trial, which is slower.", optuna.__version__, problem)
    return None


def _add_to_database(backend: RDBStorage, models: Any, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    # Trial ids of the last attempt, known once its trial rows are inserted.
    attempted: list[int] = []

    def attempt() -> list[int]:
        # A failed transaction rolls back entirely, so retrying the whole batch is safe,
        # except when the commit reached the server and only its acknowledgement was
        # lost with the connection. The batch is then stored, and adding it again would
        # duplicate it. Because the batch is atomic, its first trial shows whether it is stored.
        if attempted and _batch_is_stored(backend, models, study_id, attempted[0]):
            return list(attempted)
        with backend.engine.begin() as connection:
            ids = _insert_batch(connection, models, study_id, trials)
            attempted[:] = ids
        return ids

    return retry_transient(attempt, f"adding {len(trials)} finished trials to study {study_id}")


def _batch_is_stored(backend: RDBStorage, models: Any, study_id: int, first_trial_id: int) -> bool:
    # NOTE: a rolled-back trial id can be handed out again by SQLite (max rowid + 1) and
    # by MySQL before 8.0 after a server restart. A false "stored" then needs a trial of
    # this study added meanwhile by a writer without the study lock.
    import sqlalchemy

    trials = models.TrialModel.__table__
    query = sqlalchemy.select(trials.c.trial_id).where(trials.c.trial_id == first_trial_id,
                                                       trials.c.study_id == study_id)
    with backend.engine.connect() as connection:
        return connection.execute(query).first() is not None


def _insert_batch(connection: Any, models: Any, study_id: int, trials: Sequence[FrozenTrial]) -> list[int]:
    import sqlalchemy

    trial_table = models.TrialModel.__table__
    _lock_study(connection, models, study_id)
    count_query = sqlalchemy.select(sqlalchemy.func.count()).select_from(trial_table).where(
        trial_table.c.study_id == study_id)
    first_number = connection.execute(count_query).scalar_one()
    _check_distributions(connection, models, study_id, trials)

    stored_datetimes = _datetime_converter(models)
    trial_rows = [
        {"study_id": study_id, "number": first_number + k, "state": trial.state, **stored_datetimes(trial)}
        for k, trial in enumerate(trials)
    ]
    trial_ids = _insert_returning_ids(connection, trial_table, trial_rows)

    for model, rows in _child_rows(models, trial_ids, trials):
        if rows:
            connection.execute(sqlalchemy.insert(model.__table__), rows)
    return trial_ids


def _lock_study(connection: Any, models: Any, study_id: int) -> None:
    """Take the lock that serializes adding trials to the study, and check that the study exists."""
    import sqlalchemy

    if connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
        # Python's sqlite3 module starts a transaction only at the first INSERT, so the
        # count of trials would otherwise be read before the write lock is held.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    studies = models.StudyModel.__table__
    query = sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update()
    if connection.execute(query).first() is None:
        raise KeyError(f"Study id {study_id} not found in the storage; pass the id of an existing study "
                       "(Study._study_id).")


def _check_distributions(connection: Any, models: Any, study_id: int, trials: Sequence[FrozenTrial]) -> None:
    """Raise ValueError when a distribution of the batch is incompatible with the study's, as Optuna does."""
    import sqlalchemy

    trial_table, param_table = models.TrialModel.__table__, models.TrialParamModel.__table__
    reference: dict[str, distributions.BaseDistribution] = {}
    # Callers typically share one distribution object per parameter among all trials.
    checked: set[tuple[str, int]] = set()
    for position, trial in enumerate(trials):
        for name, distribution in trial.distributions.items():
            if (name, id(distribution)) in checked:
                continue
            if name not in reference:
                query = (sqlalchemy.select(param_table.c.distribution_json)
                         .join(trial_table, param_table.c.trial_id == trial_table.c.trial_id)
                         .where(trial_table.c.study_id == study_id, param_table.c.param_name == name)
                         .limit(1))
                stored = connection.execute(query).scalar_one_or_none()
                reference[name] = distribution if stored is None else distributions.json_to_distribution(stored)
            try:
                distributions.check_distribution_compatibility(reference[name], distribution)
            except ValueError as error:
                raise ValueError(
                    f"Parameter {name!r} of trial {position} of the batch has the distribution {distribution}, "
                    f"incompatible with {reference[name]} of the same parameter in study {study_id} ({error}); "
                    "use the study's distribution or a new study."
                ) from None
            checked.add((name, id(distribution)))


def _datetime_converter(models: Any):
    """Return a function from a trial to its `datetime_start` and `datetime_complete` column values.

    Optuna's TrialModel converts a datetime to the stored form (naive UTC in 5.1) in a
    property setter, so the values are taken from a transient TrialModel rather than
    converted here a second time.
    """
    import sqlalchemy

    mapper = sqlalchemy.inspect(models.TrialModel)
    table = models.TrialModel.__table__
    keys = {column: mapper.get_property_by_column(table.c[column]).key
            for column in ("datetime_start", "datetime_complete")}

    def convert(trial: FrozenTrial) -> dict[str, Any]:
        row = models.TrialModel(datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete)
        return {column: getattr(row, key) for column, key in keys.items()}

    return convert


def _insert_returning_ids(connection: Any, table: Any, rows: list[dict]) -> list[int]:
    import sqlalchemy

    if getattr(connection.dialect, "insert_executemany_returning", False):
        # RETURNING rows in parameter order would make SQLAlchemy insert one row per
        # statement on SQLite, so the number comes back with each id to map ids to rows.
        # NOTE: the numbers follow the order of `rows`. They match Optuna's numbers (the
        # count of the study's trials with a smaller trial id) only if the database hands
        # out ids in row order, which the tests check on PostgreSQL, MariaDB and SQLite.
        statement = sqlalchemy.insert(table).returning(table.c.trial_id, table.c.number)
        id_of_number = {number: trial_id for trial_id, number in connection.execute(statement, rows)}
        return [id_of_number[row["number"]] for row in rows]
    # MySQL has no INSERT ... RETURNING, so each trial row is its own statement there.
    return [connection.execute(sqlalchemy.insert(table), row).inserted_primary_key[0] for row in rows]


def _child_rows(models: Any, trial_ids: list[int], trials: Sequence[FrozenTrial]):
    """Return (model, rows) for each table beside `trials` that a template trial fills."""
    params, values, intermediate_values, user_attrs, system_attrs = [], [], [], [], []
    # Keyed by id: equal distributions may differ in JSON, e.g. the choices (1, 2) and (True, 2).
    distribution_json: dict[int, str] = {}
    for trial_id, trial in zip(trial_ids, trials):
        # Params in the template's order: Optuna reads them back ordered by param_id.
        for name, value in trial.params.items():
            distribution = trial.distributions[name]
            if id(distribution) not in distribution_json:
                distribution_json[id(distribution)] = distributions.distribution_to_json(distribution)
            params.append({"trial_id": trial_id, "param_name": name,
                           "param_value": distribution.to_internal_repr(value),
                           "distribution_json": distribution_json[id(distribution)]})
        for objective, value in enumerate(trial.values or ()):
            stored, value_type = models.TrialValueModel.value_to_stored_repr(value)
            values.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": value_type})
        for step, value in trial.intermediate_values.items():
            stored, value_type = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            intermediate_values.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                        "intermediate_value_type": value_type})
        for attrs, target in ((trial.user_attrs, user_attrs), (trial.system_attrs, system_attrs)):
            target.extend({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                          for key, value in attrs.items())
    return [
        (models.TrialParamModel, params),
        (models.TrialValueModel, values),
        (models.TrialIntermediateValueModel, intermediate_values),
        (models.TrialUserAttributeModel, user_attrs),
        (models.TrialSystemAttributeModel, system_attrs),
    ]
