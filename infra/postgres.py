"""PostgreSQL for Label Studio, as a service of the local stack (`alpha stack up --db postgres`).

Label Studio keeps projects, tasks and annotations in SQLite unless told otherwise: one file
that takes one writer at a time, which holds for one annotator but makes concurrent saves
wait on each other's lock (bench/labelstudio.py measures it). PostgreSQL takes concurrent
writers; this module runs one for the stack, the way the stack runs its other servers.

- Binaries: Debian's PostgreSQL (`/usr/lib/postgresql/<version>/bin`, the `postgresql`
  package that infra/setup.sh installs), `ALPHA_POSTGRES_BIN` to use others.
- One cluster per install under `$ALPHA_HOME/postgres` (initdb once), owned by the user
  that runs the server, mode 0700.
- TCP on 127.0.0.1 only, no unix socket, password authentication (scram-sha-256) for every
  connection; the password is generated per install and kept with the stack's other
  secrets. It goes to initdb on its standard input and to Label Studio in its environment,
  never on a command line (readable by every local user) and never in a log.
- PostgreSQL refuses to run as root. When the stack runs as root (CI, containers), the
  server runs as the system user `postgres` (created by Debian's package; override with
  `ALPHA_POSTGRES_USER`) through `setpriv`, which execs in place so the stack's PID record
  is the server's own PID; the cluster folder belongs to that user.

Which database Label Studio uses is a choice kept in `$ALPHA_HOME/stack/options.json`, so
`stack up`, `down` and `status` agree on it across invocations.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from alpha.errors import ConfigError, ServiceUnavailable

DATABASES = ("sqlite", "postgres")
DEFAULT_DB = "sqlite"
DB_NAME = "labelstudio"
DB_USER = "alpha"
SYSTEM_USER = os.environ.get("ALPHA_POSTGRES_USER", "postgres")
DEBIAN_BIN_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = ("install PostgreSQL (`apt-get install postgresql`, as infra/setup.sh does) or "
                "set ALPHA_POSTGRES_BIN to the folder holding `postgres` and `initdb`")


# ---- the choice of database ----------------------------------------------------------------
def _options_file(home: Path) -> Path:
    return home / "stack" / "options.json"


def chosen_db(home: Path) -> str:
    """The database Label Studio uses in this install: the one last given to `stack up
    --db`, else SQLite (the quick default, enough for one annotator)."""
    path = _options_file(home)
    if not path.is_file():
        return DEFAULT_DB
    return json.loads(path.read_text()).get("db", DEFAULT_DB)


def choose_db(home: Path, db: str) -> None:
    """Remember the database for later `stack up/down/status` of this install."""
    if db not in DATABASES:
        raise ConfigError(f"Unknown database {db!r} for Label Studio: choose one of "
                          f"{', '.join(DATABASES)}.")
    path = _options_file(home)
    options = json.loads(path.read_text()) if path.is_file() else {}
    options["db"] = db
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(options, indent=1) + "\n")


# ---- binaries and the user the server runs as -----------------------------------------------
def bin_dir() -> Path:
    """The folder of `postgres`, `initdb` and `pg_isready`: ALPHA_POSTGRES_BIN, else the
    newest Debian version, else wherever `postgres` is on PATH."""
    override = os.environ.get("ALPHA_POSTGRES_BIN")
    candidates = [Path(override)] if override else [
        *sorted((p / "bin" for p in DEBIAN_BIN_ROOT.glob("*")),
                key=lambda p: _version_key(p.parent.name), reverse=True),
        *([Path(found).parent] if (found := shutil.which("postgres")) else []),
    ]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("postgres", "initdb", "pg_isready")):
            return folder
    raise ServiceUnavailable(f"PostgreSQL is not installed (looked in "
                             f"{', '.join(map(str, candidates)) or DEBIAN_BIN_ROOT}): "
                             f"{INSTALL_HINT}.")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def available() -> bool:
    """Whether PostgreSQL can run here (binaries found; as root, its system user exists)."""
    try:
        bin_dir()
        server_user()
    except ServiceUnavailable:
        return False
    return True


def server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ServiceUnavailable(
            f"PostgreSQL refuses to run as root and there is no user {SYSTEM_USER!r} to run it "
            "as: install Debian's `postgresql` package (it creates one), create a system user "
            "and set ALPHA_POSTGRES_USER, or run the stack as a user other than root."
        ) from None


def _as_server_user(command: list[str]) -> list[str]:
    """`command` run as the server's user: setpriv replaces itself with the command (the PID
    stays the one the stack records), with that user's ids and no other groups."""
    user = server_user()
    if user is None:
        return command
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--", *command]


# ---- the cluster ------------------------------------------------------------------------------
def cluster_dir(home: Path) -> Path:
    """The install's cluster. Outside `$ALPHA_HOME/data` on purpose: that folder is 0700 and
    owned by whoever runs the stack, so a server running as another user could not enter it."""
    return home / "postgres"


def _reachable_by(folder: Path, user: pwd.struct_passwd) -> Path | None:
    """The first folder above `folder` that `user` may not enter, or None."""
    for parent in reversed(folder.parents):
        if not parent.exists():
            return None  # made by us below, with our umask
        mode = parent.stat()
        if mode.st_uid == user.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == user.pw_gid:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return parent
    return None


def ensure_cluster(home: Path, password: str, log: Callable[[str], None]) -> Path:
    """Create the install's cluster once: its superuser `alpha` with `password`, password
    authentication for every connection, and Label Studio's database.

    Built in a sibling folder and renamed when complete, so a failed or killed first start
    leaves nothing that looks like a cluster and the next `stack up` starts over.
    """
    folder = cluster_dir(home)
    if (folder / "PG_VERSION").is_file():
        return folder
    binaries, user = bin_dir(), server_user()
    if user is not None and (blocked := _reachable_by(folder, user)) is not None:
        raise ServiceUnavailable(
            f"PostgreSQL runs as user {user.pw_name!r} (it refuses root) and cannot enter "
            f"{blocked}: give others the right to enter it (`chmod o+x {blocked}`) or set "
            "ALPHA_HOME to a folder under one they can enter."
        )
    building = folder.with_name(folder.name + ".initdb")
    _private_dir(building, user)
    log(f"postgres: creating the cluster in {folder} (once per install)")
    # initdb reads the password from a file only (a pipe on its standard input belongs to
    # us and a server user other than root may not open it): a private folder of that
    # user's, removed as soon as initdb has read it.
    secret = folder.with_name(folder.name + ".pw")
    try:
        _private_dir(secret, user)
        _write_private_file(secret / "pwfile", password + "\n", user)
        _run(_as_server_user([
            str(binaries / "initdb"), "-D", str(building), f"--username={DB_USER}",
            "--auth=scram-sha-256", f"--pwfile={secret / 'pwfile'}", "--encoding=UTF8",
            "--locale=C",
        ]), stdin="", what="initdb")
        shutil.rmtree(secret)
        # Single-user mode: no server, no port, no password needed to make the database.
        _run(_as_server_user([str(binaries / "postgres"), "--single", "-D", str(building),
                              "postgres"]),
             stdin=f"CREATE DATABASE {DB_NAME};\n", what="creating Label Studio's database")
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(secret, ignore_errors=True)
    building.rename(folder)
    return folder


def _private_dir(folder: Path, user: pwd.struct_passwd | None) -> None:
    """A fresh folder only `user` (None: we) may enter."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)


def _write_private_file(path: Path, text: str, user: pwd.struct_passwd | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        if user is not None:
            os.fchown(handle.fileno(), user.pw_uid, user.pw_gid)
        handle.write(text)


def _run(command: list[str], stdin: str, what: str) -> None:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:  # initdb and postgres --single never echo the password
        raise ServiceUnavailable(f"PostgreSQL {what} failed (exit {done.returncode}):\n"
                                 f"{(done.stdout + done.stderr)[-2000:]}")


# ---- the server -------------------------------------------------------------------------------
def server_command(home: Path, host: str, port: int) -> list[str]:
    """The server in the foreground on `host:port` only, no unix socket, logging to stderr
    (the stack's log file)."""
    return _as_server_user([
        str(bin_dir() / "postgres"), "-D", str(cluster_dir(home)), "-p", str(port),
        "-c", f"listen_addresses={host}", "-c", "unix_socket_directories=",
    ])


def is_ready(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """Whether the server accepts connections (pg_isready: answers without a password)."""
    try:
        done = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", host, "-p", str(port),
             "-d", DB_NAME, "-U", DB_USER, "-t", str(max(1, round(timeout_s)))],
            capture_output=True, timeout=timeout_s + 2,
        )
    except (ServiceUnavailable, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def labelstudio_env(host: str, port: int, password: str) -> dict[str, str]:
    """What makes Label Studio 1.23 use this server (core/settings/label_studio.py: DJANGO_DB
    `default` is its PostgreSQL entry, read from POSTGRE_*; psycopg 3 comes with it)."""
    return {"DJANGO_DB": "default", "POSTGRE_NAME": DB_NAME, "POSTGRE_USER": DB_USER,
            "POSTGRE_PASSWORD": password, "POSTGRE_HOST": host, "POSTGRE_PORT": str(port)}
