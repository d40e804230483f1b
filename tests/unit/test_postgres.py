"""Label Studio on PostgreSQL, without starting a server: the choice of database is kept per
install and drives which services run, the password is generated per install and stays off
command lines and files, and the cluster (made with the real initdb, skipped where
PostgreSQL is not installed) takes passwords only."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha.errors import ConfigError, ServiceUnavailable
from infra import postgres, stack


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> stack.StackPaths:
    monkeypatch.setattr(stack, "_bin", lambda name: name)  # no weed/prefect binary needed
    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return stack.StackPaths(tmp_path)


def test_sqlite_is_the_default_and_the_choice_is_remembered(paths: stack.StackPaths) -> None:
    assert postgres.chosen_db(paths.home) == "sqlite"
    assert [s.name for s in stack.services(paths)] == ["s3", "labelstudio", "prefect", "webhook"]
    stack._choose_db(paths, "postgres", log=lambda line: None)
    assert postgres.chosen_db(paths.home) == "postgres"  # read back from the install's file
    # PostgreSQL starts before Label Studio, which needs it, so `down` stops it after.
    assert [s.name for s in stack.services(paths)] == [
        "s3", "postgres", "labelstudio", "prefect", "webhook"]
    stack._choose_db(paths, None, log=lambda line: None)  # a plain `up` keeps the choice
    assert postgres.chosen_db(paths.home) == "postgres"
    with pytest.raises(ConfigError, match="mysql.*sqlite, postgres"):
        postgres.choose_db(paths.home, "mysql")


def test_the_database_does_not_change_under_a_running_label_studio(
    paths: stack.StackPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "recorded_pid", lambda p, name: 123 if name == "labelstudio"
                        else None)
    with pytest.raises(ServiceUnavailable, match="running on sqlite.*stack down"):
        stack._choose_db(paths, "postgres", log=lambda line: None)
    assert postgres.chosen_db(paths.home) == "sqlite"


def test_label_studio_gets_postgres_settings_only_when_chosen(paths: stack.StackPaths) -> None:
    creds = stack.ensure_credentials(paths)
    assert "DJANGO_DB" not in stack._labelstudio_env(paths, creds)
    postgres.choose_db(paths.home, "postgres")
    env = stack._labelstudio_env(paths, creds)
    assert env["DJANGO_DB"] == "default"  # Label Studio's name for its PostgreSQL entry
    assert env["POSTGRE_HOST"] == stack.HOST and env["POSTGRE_PORT"] == str(stack.POSTGRES.port)
    assert env["POSTGRE_PASSWORD"] == creds["postgres_password"]


def test_the_password_is_per_install_and_on_no_command_line_or_env_file(
    paths: stack.StackPaths, tmp_path: Path
) -> None:
    creds = stack.ensure_credentials(paths)
    other = stack.ensure_credentials(stack.StackPaths(tmp_path / "other"))
    password = creds["postgres_password"]
    assert len(password) >= 24 and password != other["postgres_password"]
    assert stack.ensure_credentials(paths)["postgres_password"] == password  # kept
    assert password not in paths.env_file.read_text()  # alpha itself never connects
    postgres.choose_db(paths.home, "postgres")
    commands = [s.command(paths, creds) for s in stack.services(paths)
                if s.name != "postgres"]
    if postgres.available():
        commands.append(stack.POSTGRES.command(paths, creds))
    assert not any(password in part for command in commands for part in command)


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL is not installed here")
def test_the_server_listens_on_loopback_only_as_a_user_other_than_root(
    paths: stack.StackPaths,
) -> None:
    command = stack.POSTGRES.command(paths, stack.ensure_credentials(paths))
    assert f"listen_addresses={stack.HOST}" in command
    assert "unix_socket_directories=" in command  # no socket file anywhere
    assert command[command.index("-p") + 1] == str(stack.POSTGRES.port)
    if os.geteuid() == 0:  # PostgreSQL refuses root: setpriv execs it as its own user
        user = postgres.server_user()
        assert user is not None and command[:2] == ["setpriv", f"--reuid={user.pw_uid}"]
    else:
        assert command[0].endswith("/postgres")


@pytest.fixture
def enterable_home() -> Iterator[Path]:
    """A home the server's user may enter (pytest's tmp folders are private to root)."""
    home = Path(tempfile.mkdtemp(prefix="alpha-pg-unit-"))
    home.chmod(0o711)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL is not installed here")
def test_the_cluster_takes_passwords_only_and_keeps_none(enterable_home: Path) -> None:
    password = "pw-" + os.urandom(12).hex()
    folder = postgres.ensure_cluster(enterable_home, password, log=lambda line: None)
    assert (folder / "PG_VERSION").is_file() and _mode(folder) == 0o700
    user = postgres.server_user()
    assert folder.stat().st_uid == (user.pw_uid if user else os.geteuid())
    rules = [line.split() for line in (folder / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)  # no trust, no peer
    files = [p for p in enterable_home.rglob("*") if p.is_file()]
    assert not any(password.encode() in p.read_bytes() for p in files)
    assert sorted(p.name for p in enterable_home.iterdir()) == ["postgres"]  # no pwfile left
    assert postgres.ensure_cluster(enterable_home, "another", log=lambda line: None) == folder


@pytest.mark.skipif(os.geteuid() != 0 or not postgres.available(),
                    reason="only root runs the server as another user")
def test_a_home_the_server_user_cannot_enter_is_refused_with_what_to_do(tmp_path: Path) -> None:
    blocked = tmp_path / "private"
    blocked.mkdir(mode=0o700)
    with pytest.raises(ServiceUnavailable, match=r"cannot enter .*chmod o\+x"):
        postgres.ensure_cluster(blocked / "home", "pw", log=lambda line: None)
    assert not (blocked / "home" / "postgres").exists()


def test_up_refuses_a_service_the_stack_does_not_run(
    paths: stack.StackPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHA_HOME", str(paths.home))
    with pytest.raises(ConfigError, match="No service postgres.*s3, labelstudio"):
        stack.up(log=lambda line: None, only=["s3", "postgres"])  # SQLite: no postgres
