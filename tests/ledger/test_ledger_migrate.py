"""The migration runner against a real PostgreSQL: order, exactly once, tampering, failure, concurrency."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ledger_helpers import cli, python

from kai_flows.ledger.db import connect
from kai_flows.ledger.errors import DatabaseUnavailable, MigrationError
from kai_flows.ledger.migrate import discover, migrate, migrations_dir, status


def write(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(exist_ok=True)
    for name, sql in files.items():
        (d / name).write_text(sql)
    return d


def tables(url: str) -> set[str]:
    with connect(url) as c:
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r["tablename"] for r in rows}


def applied(url: str) -> list[tuple[str, str]]:
    with connect(url) as c:
        rows = c.execute("SELECT name, checksum FROM schema_migrations ORDER BY id").fetchall()
    return [(r["name"], r["checksum"]) for r in rows]


def test_project_migrations_apply_in_order_and_second_run_is_a_noop(database_url: str) -> None:
    names = [f.name for f in discover()]
    assert names == sorted(names) and names[0] == "001_job_ledger.sql"
    first = migrate(database_url)
    assert first.applied == names and first.already_applied == []
    assert {"jobs", "job_status_history", "job_outputs", "schema_migrations"} <= tables(database_url)
    recorded = applied(database_url)
    assert [n for n, _ in recorded] == names
    assert all(c == f.checksum and len(c) == 64 for (_, c), f in zip(recorded, discover(), strict=True))

    second = migrate(database_url)
    assert second.applied == [] and second.already_applied == names
    assert applied(database_url) == recorded
    assert {s.state for s in status(database_url)} == {"applied"}


def test_dry_run_applies_nothing(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (x int);", "002_b.sql": "CREATE TABLE b (x int);"})
    report = migrate(database_url, directory=d, dry_run=True)
    assert report.applied == ["001_a.sql", "002_b.sql"] and report.dry_run
    assert tables(database_url) == set()  # not even the tracking table
    migrate(database_url, directory=d)
    write(d, {"003_c.sql": "CREATE TABLE c (x int);"})
    assert migrate(database_url, directory=d, dry_run=True).applied == ["003_c.sql"]
    assert "c" not in tables(database_url)
    assert [(s.name, s.state) for s in status(database_url, directory=d)] == [
        ("001_a.sql", "applied"), ("002_b.sql", "applied"), ("003_c.sql", "pending")]


def test_two_runners_started_at_once_apply_each_file_once(database_url: str, tmp_path: Path) -> None:
    # Not idempotent on purpose: a second application would fail on CREATE TABLE or count 2.
    d = write(tmp_path / "m", {
        "001_slow.sql": "CREATE TABLE runs (n int); SELECT pg_sleep(0.6); INSERT INTO runs VALUES (1);",
        "002_more.sql": "CREATE TABLE more (x int); INSERT INTO runs VALUES (2);",
    })
    code = ("import json, sys; from kai_flows.ledger.migrate import migrate; "
            "r = migrate(sys.argv[1], directory=sys.argv[2]); print(json.dumps(r.applied))")
    procs = [python("-c", code, database_url, str(d), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    reports = sorted(json.loads(out) for out, _ in results)
    assert reports == [[], ["001_slow.sql", "002_more.sql"]]
    with connect(database_url) as c:
        assert [r["n"] for r in c.execute("SELECT n FROM runs ORDER BY n")] == [1, 2]
    assert [n for n, _ in applied(database_url)] == ["001_slow.sql", "002_more.sql"]


def test_tampered_applied_file_stops_the_runner(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (x int);"})
    migrate(database_url, directory=d)
    write(d, {"001_a.sql": "CREATE TABLE a (x int, y int);", "002_b.sql": "CREATE TABLE b (x int);"})
    with pytest.raises(MigrationError, match=r"applied migration 001_a\.sql was changed after it was applied"):
        migrate(database_url, directory=d)
    assert "b" not in tables(database_url)  # nothing after the check ran
    assert [(s.name, s.state) for s in status(database_url, directory=d)] == [
        ("001_a.sql", "changed"), ("002_b.sql", "pending")]


def test_removed_applied_file_stops_the_runner(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (x int);", "002_b.sql": "CREATE TABLE b (x int);"})
    migrate(database_url, directory=d)
    (d / "002_b.sql").unlink()
    write(d, {"003_c.sql": "CREATE TABLE c (x int);"})
    with pytest.raises(MigrationError, match=r"applied migration 002_b\.sql is missing from"):
        migrate(database_url, directory=d)
    assert "c" not in tables(database_url)
    assert ("002_b.sql", "missing") in [(s.name, s.state) for s in status(database_url, directory=d)]


def test_broken_file_rolls_back_alone_and_stops_the_run(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {
        "001_ok.sql": "CREATE TABLE ok (x int);",
        "002_broken.sql": "CREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nSELECT * FROM no_such_table;\n",
        "003_later.sql": "CREATE TABLE later (x int);",
    })
    with pytest.raises(MigrationError, match=r"migration 002_broken\.sql failed at line 3: "
                                             r"relation \"no_such_table\" does not exist") as e:
        migrate(database_url, directory=d)
    assert "\n" not in str(e.value)
    assert tables(database_url) == {"schema_migrations", "ok"}  # 002's first statements rolled back too
    assert [n for n, _ in applied(database_url)] == ["001_ok.sql"]
    write(d, {"002_broken.sql": "CREATE TABLE half (x int);"})  # fixed before it was ever applied: allowed
    assert migrate(database_url, directory=d).applied == ["002_broken.sql", "003_later.sql"]


@pytest.mark.parametrize(("sql", "line", "statement"), [
    ("CREATE TABLE a (x int);\nCOMMIT;\n", 2, "COMMIT"),
    ("-- set up\nBEGIN;\nCREATE TABLE a (x int);\n", 2, "BEGIN"),
    ("CREATE TABLE a (x int);\n\n  start transaction;", 3, "START TRANSACTION"),
    ("CREATE TABLE a (x int); ROLLBACK;", 1, "ROLLBACK"),
])
def test_a_file_with_transaction_control_is_refused_before_anything_runs(database_url: str, tmp_path: Path,
                                                                        sql: str, line: int, statement: str) -> None:
    d = write(tmp_path / "m", {"001_ok.sql": "CREATE TABLE ok (x int);", "002_a.sql": sql, "003_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=rf"migration 002_a\.sql line {line}: {statement} controls the "
                                             r"transaction.*nothing was applied"):
        migrate(database_url, directory=d)
    assert applied(database_url) == [] and "a" not in tables(database_url) and "ok" not in tables(database_url)


def test_transaction_words_inside_strings_comments_and_function_bodies_are_not_control(database_url: str,
                                                                                         tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": (
        "-- COMMIT is a word here\nCREATE TABLE notes (t text);\nINSERT INTO notes VALUES ('BEGIN; COMMIT;');\n"
        "/* ROLLBACK */ DO $$ BEGIN RAISE NOTICE 'x'; END $$;\n"
        "CREATE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n")})
    assert migrate(database_url, directory=d).applied == ["001_a.sql"]


@pytest.mark.parametrize(("files", "message"), [
    ({"001_a.sql": "", "1_b.sql": ""}, r"migration file 1_b\.sql does not match NNN_name\.sql"),
    ({"001_a.sql": "", "002-b.sql": ""}, r"002-b\.sql does not match"),
    ({"001_a.sql": "", "002_b.sql": "", "002_c.sql": ""}, r"migrations 002_b\.sql and 002_c\.sql share the number 002"),
])
def test_bad_file_names(database_url: str, tmp_path: Path, files: dict[str, str], message: str) -> None:
    d = write(tmp_path / "m", files)
    with pytest.raises(MigrationError, match=message):
        migrate(database_url, directory=d)
    assert tables(database_url) == set()


def test_pending_file_numbered_before_an_applied_one_is_refused(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": "SELECT 1;", "003_c.sql": "SELECT 1;"})
    migrate(database_url, directory=d)
    write(d, {"002_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"pending migration 002_b\.sql sorts before the already applied 003_c"):
        migrate(database_url, directory=d)


def test_migrations_dir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert migrations_dir() == Path(__file__).resolve().parents[2] / "migrations"
    monkeypatch.setenv("KAI_MIGRATIONS_DIR", str(tmp_path))
    assert migrations_dir() == tmp_path
    with pytest.raises(MigrationError, match=r"migrations directory .*nowhere does not exist"):
        migrations_dir(tmp_path / "nowhere")


def test_connection_errors_are_clear(database_url: str) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"cannot connect to PostgreSQL postgres@127\.0\.0\.1:5999/.*refused"):
        migrate(database_url.replace("5432", "5999"))
    bad_role = database_url.replace("user=postgres", "user=kai_no_such_role")
    with pytest.raises(DatabaseUnavailable, match=r'role "kai_no_such_role" does not exist'):
        migrate(bad_role)
    with pytest.raises(DatabaseUnavailable, match=r"invalid database URL"):
        migrate("postgresql://[broken")


def test_cli_migrate_status_and_errors(database_url: str) -> None:
    r = cli("migrate", "--dry-run", env={"KAI_DATABASE_URL": database_url})
    assert r.exit_code == 0 and "would apply 001_job_ledger.sql" in r.stdout
    assert tables(database_url) == set()
    r = cli("migrate", "--database-url", database_url)
    assert r.exit_code == 0 and "applied 001_job_ledger.sql" in r.stdout
    r = cli("migrate", "--database-url", database_url, "--status")
    assert r.exit_code == 0 and r.stdout.startswith("applied  001_job_ledger.sql")
    r = cli("migrate", "--database-url", database_url.replace("5432", "5999"))
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot connect to PostgreSQL")
    assert "Traceback" not in r.output


def test_cli_status_flags_a_tampered_file(database_url: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    migrate(database_url, directory=d)
    write(d, {"001_a.sql": "SELECT 2;"})
    r = cli("migrate", "--database-url", database_url, "--status", "--directory", str(d))
    assert r.exit_code == 1 and r.stdout.startswith("changed  001_a.sql")
    r = cli("migrate", "--database-url", database_url, "--directory", str(d))
    assert r.exit_code == 1 and r.stderr.startswith("error: applied migration 001_a.sql was changed")
