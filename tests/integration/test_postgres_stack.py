"""Label Studio on PostgreSQL, for real: `alpha stack up --db postgres` starts a stack of its
own (a fresh ALPHA_HOME, free ports), alpha pushes and pulls through it, the tasks are rows
in PostgreSQL (not in a SQLite file), and after `stack down` a plain `stack up` comes back
on PostgreSQL with the project still there.

Skipped only where PostgreSQL is not installed (infra/setup.sh installs it); on CI
(`CI=true`) that is a failure, as for the rest of the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha.config import Settings, load_settings
from alpha.labelstudio import LabelStudioProject
from alpha.records import read_all_records
from alpha.simulate import simulate_annotations
from infra import postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Ports `weed mini` opens besides S3's, each with its gRPC port 10000 above (infra.stack).
GRPC_PORTS = ("S3", "S3_MASTER", "S3_VOLUME", "S3_FILER", "S3_ADMIN")
OTHER_PORTS = ("LABELSTUDIO", "PREFECT", "POSTGRES")  # and WEBHOOK, on its own address
WEBHOOK_HOST = "127.77.0.9"
SERVICES = "s3,postgres,labelstudio"


def _free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports() -> dict[str, int]:
    """A free port in 20000-29999 for each of the stack's port settings, none twice (and for
    SeaweedFS's, the gRPC port 10000 above free as well)."""
    ports: dict[str, int] = {}
    taken: set[int] = set()
    candidate = 20000 + uuid.uuid4().int % 10000
    for name in (*GRPC_PORTS, *OTHER_PORTS, "WEBHOOK"):
        host = WEBHOOK_HOST if name == "WEBHOOK" else "127.0.0.1"
        needs = (0, 10000) if name in GRPC_PORTS else (0,)
        while True:
            candidate = 20000 + (candidate - 20000 + 7) % 10000
            wanted = {candidate + offset for offset in needs}
            if not wanted & taken and all(_free(port, host) for port in wanted):
                break
        ports[name] = candidate
        taken |= wanted
    return ports


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[dict]:
    """A stack of its own on PostgreSQL; its home, env and the commands that manage it."""
    if not postgres.available():
        reason = "PostgreSQL is not installed: run infra/setup.sh (apt-get install postgresql)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    # The server runs as the `postgres` user under root and must enter the home: pytest's
    # tmp folders are private to root, so the home is made here and opened to entering.
    home = Path(tempfile.mkdtemp(prefix="alpha-pg-stack-"))
    home.chmod(0o711)
    ports = _free_ports()
    env = {**os.environ, "ALPHA_HOME": str(home), "ALPHA_STACK_WEBHOOK_HOST": WEBHOOK_HOST,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p),
           **{f"ALPHA_STACK_{name}_PORT": str(port) for name, port in ports.items()}}

    def alpha_stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alpha.cli", "stack", *args], env=env,
                              cwd=home, capture_output=True, text=True, timeout=timeout)

    # Prefect and the webhook receiver are not needed here: their start would add a minute.
    started = alpha_stack("up", "--db", "postgres", "--only", SERVICES)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"home": home, "env": env, "stack": alpha_stack, "up": started.stdout}
    finally:
        stopped = alpha_stack("down", timeout=120)
        print(stopped.stdout + stopped.stderr)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(pg_stack, run_id, labels) -> Settings:
    """The test stack's settings (its own stack.env), whatever the environment says: the
    conftest's store, images and project fixtures then live on this stack."""
    home = pg_stack["home"]
    env = dict(line.split("=", 1) for line in (home / "stack.env").read_text().splitlines())
    return load_settings(
        env_file=home / "stack.env",
        s3={"prefix": f"it-pg-{run_id}", "endpoint_url": env["ALPHA_S3__ENDPOINT_URL"],
            "access_key_id": env["ALPHA_S3__ACCESS_KEY_ID"],
            "secret_access_key": env["ALPHA_S3__SECRET_ACCESS_KEY"]},
        labelstudio={"project_title": f"alpha pg test {run_id}",
                     "url": env["ALPHA_LABELSTUDIO__URL"],
                     "api_key": env["ALPHA_LABELSTUDIO__API_KEY"],
                     "webhook_url": None, "webhook_secret": None},
        task={"labels": labels},
    )


def _psql(home: Path, env: dict, sql: str) -> str:
    """One query in Label Studio's database, as Label Studio logs in (password by env)."""
    creds = json.loads((home / "stack" / "credentials.json").read_text())
    done = subprocess.run(
        [str(postgres.bin_dir() / "psql"), "-h", "127.0.0.1",
         "-p", env["ALPHA_STACK_POSTGRES_PORT"], "-U", postgres.DB_USER,
         "-d", postgres.DB_NAME, "-Atc", sql],
        env={**os.environ, "PGPASSWORD": creds["postgres_password"]},
        capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def test_label_studio_on_postgres_pushes_pulls_and_survives_a_restart(
    pg_stack, settings, store, images, truth, push_items, project
) -> None:
    home, env = pg_stack["home"], pg_stack["env"]
    assert "postgres: started" in pg_stack["up"], pg_stack["up"]
    status = pg_stack["stack"]("status")  # exits 1: Prefect and the receiver are not up
    assert "database: postgres" in status.stdout, status.stdout

    pushed = project.push(push_items(images), "pg-v1", "round-0001")
    assert len(pushed.created) == len(images)
    assert project.push(push_items(images), "pg-v1", "round-0001").created == {}
    assert simulate_annotations(project, truth).annotated == len(images)
    pulled = project.pull()
    assert pulled.new == len(images) and not pulled.problems, pulled
    assert {i: r.label for i, r in read_all_records(store).items()} == truth

    # The work is in PostgreSQL, and Label Studio made no SQLite database beside it.
    project_id, n = project.project_id, str(len(images))
    assert _psql(home, env, f"select count(*) from task where project_id = {project_id}") == n
    assert _psql(home, env, "select count(*) from task_completion "
                 f"where project_id = {project_id}") == n
    assert not list((home / "data" / "labelstudio").glob("*.sqlite3"))

    # The password is on no command line and in no log of the stack.
    password = json.loads((home / "stack" / "credentials.json").read_text())[
        "postgres_password"]
    logs = {p.name: p.read_text(errors="replace") for p in (home / "logs").iterdir()}
    assert "postgres.log" in logs and not any(password in text for text in logs.values())
    pid = json.loads((home / "run" / "postgres.pid").read_text())["pid"]
    assert password not in Path(f"/proc/{pid}/cmdline").read_text()

    # down stops PostgreSQL too; a plain `up` remembers the choice and finds the project.
    stopped = pg_stack["stack"]("down", timeout=120)
    assert "postgres: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not Path(f"/proc/{pid}").exists()
    restarted = pg_stack["stack"]("up", "--only", SERVICES)
    assert restarted.returncode == 0 and "postgres: started" in restarted.stdout, (
        restarted.stdout + restarted.stderr)
    again = LabelStudioProject(settings, store)
    assert again.existing_project_id() == project_id
    assert len(again.task_image_ids()) == len(images)
    assert again.pull().new == 0
