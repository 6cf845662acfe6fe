"""The databases that server processes started by the tests write to.

DATABASE_URL chooses the kind: SQLite by default, or a PostgreSQL server
(postgres://user:password@host:port/name), on which the tests create
databases of their own next to the one named.
"""

import sqlite3
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def recreate_postgres_database(url: str, name: str) -> str:
    """Drop and create database name on url's server; return its URL."""
    parts = urlsplit(url)
    maintenance_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance_url, autocommit=True) as connection:
        identifier = sql.Identifier(name)
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier)
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(identifier))
    return urlunsplit(parts._replace(path="/" + name))


def fetch_rows(url: str, query: str, params: tuple | None = None) -> list[tuple]:
    """Run a read-only query on the database at url and return its rows.

    With params, placeholders are written %s, psycopg's style, for both kinds
    of database. Without, a % in the query is a literal character.
    """
    if is_postgres(url):
        with psycopg.connect(url) as connection:
            return connection.execute(query, params).fetchall()
    path = url.removeprefix("sqlite:///")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if params is None:
            return connection.execute(query).fetchall()
        return connection.execute(query.replace("%s", "?"), params).fetchall()
    finally:
        connection.close()
