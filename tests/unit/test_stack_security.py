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

SECRET_FIELDS = ("s3_access_key_id", "s3_secret_access_key", "ls_password", "ls_token")


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
    identity = json.loads(config.read_text())["identities"][0]["credentials"][0]
    assert identity == {"accessKey": creds["s3_access_key_id"],
                        "secretKey": creds["s3_secret_access_key"]}
    assert not any(creds["s3_secret_access_key"] in part for part in command)


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
