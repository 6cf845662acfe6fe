import os
import secrets
import subprocess

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from streaming.services import services as process_services
from streaming.source import reset_local_history

from .database import is_postgres, recreate_postgres_database
from .servers import PYTHON, ROOT, RedisServer, ServerProcess, free_port, server_command

# Short ticks keep the real-server tests fast.
TEST_WORD_INTERVAL = 0.2


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A migrated database shared by the server processes of the session.

    A SQLite file, or with a PostgreSQL DATABASE_URL a new database on that
    server.
    """
    configured = os.environ.get("DATABASE_URL", "")
    if is_postgres(configured):
        url = recreate_postgres_database(configured, "wordstream_test_servers")
    else:
        path = tmp_path_factory.mktemp("db") / "servers.sqlite3"
        url = f"sqlite:///{path}"
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    return url


@pytest.fixture
def server_env(database_url):
    """The environment of a server process started by a test."""
    return server_environment(database_url)


def server_environment(database_url: str) -> dict[str, str]:
    """Return this process's environment with the suite's server settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "WORD_LIST", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SECRET_KEY="test-" + secrets.token_urlsafe(32),
        DATABASE_URL=database_url,
        WORD_INTERVAL=str(TEST_WORD_INTERVAL),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_server(tmp_path, server_env):
    """Start a server process; every one started is stopped after the test."""
    started: list[ServerProcess] = []

    def start(
        kind: str = "uvicorn",
        port: int | None = None,
        host: str = "127.0.0.1",
        **env: str,
    ) -> ServerProcess:
        """Start a server of kind on port (a free one by default) of host.

        Only the production server ("serve") listens on a host other than
        127.0.0.1: it reads HOST from its environment.
        """
        port = port or free_port()
        log = tmp_path / f"{kind}-{host}-{port}.log"
        args = server_command(kind, port)
        process_env = {**server_env, "HOST": host, "PORT": str(port)}
        if kind == "serve":
            # The production server refuses to run with DEBUG on.
            process_env["DJANGO_DEBUG"] = "0"
        process_env.update(env)
        process = ServerProcess(kind, args, process_env, log, port, host=host)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_word_worker(tmp_path, server_env):
    """Start `manage.py broadcast_words` processes, stopped after the test."""
    from .servers import Process

    started: list[Process] = []

    def start(**env: str) -> Process:
        log = tmp_path / f"broadcast_words-{len(started)}.log"
        args = [PYTHON, "manage.py", "broadcast_words"]
        process = Process("broadcast_words", args, {**server_env, **env}, log)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
async def services(settings):
    """This process's streaming services on the in-memory channel layer."""
    settings.WORD_INTERVAL = 0.05
    reset_local_history()
    await process_services.start()
    yield process_services
    await process_services.stop()
    # The recorder's writes left a connection open in the database thread;
    # PostgreSQL cannot drop the test database while it is open.
    await sync_to_async(connections.close_all, thread_sensitive=True)()
