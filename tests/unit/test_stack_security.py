"""The local stack's secrets and exposure, without starting a service.

Every install must get its own S3 keys, Label Studio token and admin password (a key fixed
in code is a key everyone knows), kept where only the owner can read them, and every server
must be told to bind loopback and to refuse signup without an invite: these are the settings
the integration test `tests/integration/test_security.py` then checks on the running stack.
"""

from __future__ import annotations

import ipaddress
import json
import stat
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infra import stack

SECRET_FIELDS = ("s3_access_key_id", "s3_secret_access_key", "ls_password", "ls_token",
                 "webhook_secret", "prefect_auth_string", "ls_s3_access_key_id",
                 "ls_s3_secret_access_key")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fresh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user-chosen Label Studio login: everything must be generated."""
    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_each_install_generates_its_own_secrets(tmp_path: Path, fresh_env: None) -> None:
    first = stack.ensure_credentials(stack.StackPaths(tmp_path / "a"))
    second = stack.ensure_credentials(stack.StackPaths(tmp_path / "b"))
    for name in SECRET_FIELDS:
        assert first[name] and second[name] and first[name] != second[name], name
    assert len(first["s3_secret_access_key"]) >= 30 and len(first["ls_token"]) >= 20
    assert len(first["ls_password"]) >= 12
    assert len(first["ls_s3_secret_access_key"]) >= 30
    user, _, password = first["prefect_auth_string"].partition(":")
    assert user == "alpha" and len(password) >= 32  # Prefect's `user:password`
    assert first["ls_s3_access_key_id"] != first["s3_access_key_id"]


def test_an_older_install_gains_the_new_secrets_and_keeps_its_own(
    tmp_path: Path, fresh_env: None
) -> None:
    """A credentials file from before the webhook, Prefect auth and Label Studio's S3 key
    gets exactly those added on the next `up`; what it held is never regenerated."""
    paths = stack.StackPaths(tmp_path)
    old = {"s3_access_key_id": "alphaold0123456789", "s3_secret_access_key": "o" * 40,
           "ls_username": "me@example.com", "ls_password": "old-password-123",
           "ls_token": "t" * 40}
    stack._write_private(paths.credentials, json.dumps(old))
    creds = stack.ensure_credentials(paths)
    assert {k: creds[k] for k in old} == old
    assert set(creds) - set(old) == set(stack.ADDED_SECRETS)
    assert json.loads(paths.credentials.read_text()) == creds  # kept, not regenerated
    assert _mode(paths.credentials) == 0o600
    assert stack.ensure_credentials(paths) == creds
    env = paths.env_file.read_text()
    for line in (f"ALPHA_PREFECT__AUTH_STRING={creds['prefect_auth_string']}",
                 f"ALPHA_LABELSTUDIO__S3_ACCESS_KEY_ID={creds['ls_s3_access_key_id']}",
                 f"ALPHA_LABELSTUDIO__S3_SECRET_ACCESS_KEY={creds['ls_s3_secret_access_key']}"):
        assert line in env.splitlines()


def test_secrets_are_kept_once_and_readable_by_the_owner_only(
    tmp_path: Path, fresh_env: None
) -> None:
    paths = stack.StackPaths(tmp_path)
    creds = stack.ensure_credentials(paths)
    assert stack.ensure_credentials(paths) == creds  # generated once, then reused
    assert _mode(paths.credentials) == 0o600
    assert _mode(paths.env_file) == 0o600
    env = paths.env_file.read_text()
    assert creds["s3_secret_access_key"] in env and creds["ls_token"] in env
    assert creds["ls_password"] not in env  # only the browser login needs it


def test_the_s3_identity_file_is_private(tmp_path: Path, fresh_env: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "_bin", lambda name: name)  # no weed binary needed
    paths = stack.StackPaths(tmp_path)
    creds = stack.ensure_credentials(paths)
    command = stack._s3_command(paths, creds)
    config = paths.data_dir("s3") / "s3.json"
    assert _mode(config) == 0o600
    alpha, labelstudio = json.loads(config.read_text())["identities"]
    assert alpha["credentials"] == [{"accessKey": creds["s3_access_key_id"],
                                     "secretKey": creds["s3_secret_access_key"]}]
    assert "Write" in alpha["actions"]
    # Label Studio's key may read and list: what presigned GETs and its storage check need.
    assert labelstudio["credentials"] == [{"accessKey": creds["ls_s3_access_key_id"],
                                           "secretKey": creds["ls_s3_secret_access_key"]}]
    assert sorted(labelstudio["actions"]) == ["List", "Read"]
    assert not any(creds[name] in part for part in command
                   for name in ("s3_secret_access_key", "ls_s3_secret_access_key"))


def test_prefect_demands_the_auth_string_and_its_clients_get_it(
    tmp_path: Path, fresh_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the environment only: command lines are readable by every local user."""
    monkeypatch.setattr(stack, "_bin", lambda name: name)
    paths = stack.StackPaths(tmp_path)
    creds = stack.ensure_credentials(paths)
    auth = creds["prefect_auth_string"]
    assert stack._prefect_env(paths, creds)["PREFECT_SERVER_API_AUTH_STRING"] == auth
    assert stack._webhook_env(paths, creds)["PREFECT_API_AUTH_STRING"] == auth
    commands = [service.command(paths, creds) for service in stack.SERVICES.values()]
    assert not any(auth in part or creds["webhook_secret"] in part
                   for command in commands for part in command)
    assert f"ALPHA_PREFECT__AUTH_STRING={auth}" in paths.env_file.read_text().splitlines()


def test_up_restarts_a_server_started_without_a_secret_it_now_needs(tmp_path: Path) -> None:
    """A stack running from before the Prefect auth string and Label Studio's S3 key must
    not go on serving without them: `up` restarts exactly the servers that lack one."""
    paths = stack.StackPaths(tmp_path)
    for name in stack.SERVICES:  # PID records as a stack before secret names wrote them
        stack._write_private(paths.pid_file(name), json.dumps({"pid": 1, "start_time": "1"}))
    stale = {name for name, service in stack.SERVICES.items()
             if stack._missing_secrets(service, paths)}
    assert stale == {"s3", "prefect", "webhook"}
    assert stack._missing_secrets(stack.SERVICES["prefect"], paths) == ["prefect_auth_string"]
    for name, service in stack.SERVICES.items():  # as this stack records them
        stack._write_private(paths.pid_file(name), json.dumps(
            {"pid": 1, "start_time": "1", "secrets": list(service.secrets)}))
    assert not any(stack._missing_secrets(s, paths) for s in stack.SERVICES.values())


def test_stack_folders_are_private_even_when_they_existed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o755)
    stack.ensure_private_dirs(stack.StackPaths(tmp_path))
    for name in stack.PRIVATE_DIRS:
        assert _mode(tmp_path / name) == 0o700, name


def test_every_server_binds_loopback_and_signup_needs_an_invite(
    tmp_path: Path, fresh_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "_bin", lambda name: name)
    paths = stack.StackPaths(tmp_path)
    creds = stack.ensure_credentials(paths)
    assert stack.HOST == "127.0.0.1"
    s3 = stack._s3_command(paths, creds)
    assert "-ip=127.0.0.1" in s3 and "-ip.bind=127.0.0.1" in s3
    ls = stack._labelstudio_command(paths, creds)
    assert ls[ls.index("--internal-host") + 1] == "127.0.0.1"
    prefect = stack._prefect_command(paths, creds)
    assert prefect[prefect.index("--host") + 1] == "127.0.0.1"
    env = stack._labelstudio_env(paths, creds)
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    webhook = stack._webhook_command(paths, creds)
    assert webhook[-2:] == [stack.WEBHOOK_HOST, str(stack.SERVICES["webhook"].port)]
    assert all(ipaddress.ip_address(urlsplit(service.url).hostname).is_loopback
               for service in stack.SERVICES.values())


def test_seaweedfs_own_ports_need_tokens_signed_with_fresh_keys(
    tmp_path: Path, fresh_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filer and volume ports answer without S3 credentials unless signing keys are set."""
    monkeypatch.setattr(stack, "_bin", lambda name: name)
    paths = stack.StackPaths(tmp_path)
    creds = stack.ensure_credentials(paths)
    command = stack._s3_command(paths, creds)
    assert command[2] == "mini"  # -config_dir is a global flag: before the subcommand
    folder = Path(command[1].removeprefix("-config_dir="))
    security = folder / "security.toml"
    assert _mode(security) == 0o600
    first = tomllib.loads(security.read_text())["jwt"]
    keys = [first["signing"]["key"], first["signing"]["read"]["key"],
            first["filer_signing"]["key"], first["filer_signing"]["read"]["key"]]
    assert all(len(key) >= 32 for key in keys) and len(set(keys)) == 4
    stack._s3_command(paths, creds)
    again = tomllib.loads(security.read_text())["jwt"]
    assert again["signing"]["key"] != first["signing"]["key"]  # fresh at each start
