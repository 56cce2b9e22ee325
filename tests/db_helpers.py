"""Fresh PostgreSQL and MariaDB databases for storage tests, dropped after the test run.

Each fixture connects as root to the server on 127.0.0.1, creates a database and a user
with a password named `malahydra_test_<random>`, yields that user's URL and drops both
afterwards. Without a server the test is skipped, or fails when
MALAHYDRA_REQUIRE_SERVICES=1.
"""

import os
import secrets
from typing import Iterator

import pytest

from sweeper_apps.runner import URL_VARIABLES

POSTGRESQL_ADMIN_URL = "postgresql+psycopg2://root@127.0.0.1:5432/test"
MYSQL_ADMIN_URL = "mysql+pymysql://root:@127.0.0.1:3306/test"
# Stands in for a real secret: tests check it appears in no file of the sweep directory.
TEST_PASSWORD = "Pw-" + secrets.token_hex(8)


def _admin_engine(url: str, service: str):
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except Exception as error:  # noqa: BLE001 -- any connection failure means "no server"
        engine.dispose()
        reason = f"{service} on 127.0.0.1 is not reachable ({type(error).__name__}); start it to run this test"
        if os.environ.get("MALAHYDRA_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (MALAHYDRA_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return engine


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    import sqlalchemy

    engine = _admin_engine(POSTGRESQL_ADMIN_URL, "PostgreSQL")
    name = f"malahydra_test_{secrets.token_hex(4)}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE ROLE {name} LOGIN PASSWORD '{TEST_PASSWORD}'"))
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name} OWNER {name}"))
    yield f"postgresql+psycopg2://{name}:{TEST_PASSWORD}@127.0.0.1:5432/{name}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    import sqlalchemy

    engine = _admin_engine(MYSQL_ADMIN_URL, "MariaDB/MySQL")
    name = f"malahydra_test_{secrets.token_hex(4)}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        connection.execute(sqlalchemy.text(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'"))
        connection.execute(sqlalchemy.text(f"GRANT ALL PRIVILEGES ON {name}.* TO '{name}'@'127.0.0.1'"))
    yield f"mysql+pymysql://{name}:{TEST_PASSWORD}@127.0.0.1:3306/{name}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(sqlalchemy.text(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'"))
    engine.dispose()


def files_containing(directory: os.PathLike, text: str) -> list[str]:
    """Files under `directory` whose bytes contain `text`."""
    needle = text.encode()
    hits = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                if needle in handle.read():
                    hits.append(path)
    return hits


STORAGES = [
    "sqlite",
    "journal",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=STORAGES)
def storage(request, monkeypatch) -> str:
    """Storage option name; for databases the URL is exported as the sweeper expects."""
    name = request.param
    if name in URL_VARIABLES:
        monkeypatch.setenv(URL_VARIABLES[name], request.getfixturevalue(f"{name}_url"))
    return name
