"""The local stack: an S3 server (SeaweedFS), Label Studio and a Prefect server on 127.0.0.1,
and PostgreSQL for Label Studio when `up(db="postgres")` chose it (infra/postgres.py).

`up` installs what is missing (Label Studio's own virtual environment), generates secrets once
per install (S3 keys for alpha and read-only ones for Label Studio, Label Studio's login and
token, Prefect's API auth string, the webhook's secret), starts each service that is not
already running (and restarts one started without a secret it now needs), and waits until
each answers its health check. `down` stops only the processes `up` started, by the PIDs it recorded
(checked against the process start time, so a reused PID is never signalled). Everything
(data, logs, PIDs, secrets) lives under one folder: `$ALPHA_HOME` (default `./.alpha`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from alpha.config import alpha_home
from alpha.errors import ConfigError, ServiceUnavailable
from infra import postgres

LABEL_STUDIO_VERSION = "1.23.2"
HOST = "127.0.0.1"
# The webhook receiver's own loopback address: Label Studio may send webhooks to it and to
# no other local address (every other service listens on HOST), see _labelstudio_ssrf_env.
WEBHOOK_HOST = os.environ.get("ALPHA_STACK_WEBHOOK_HOST", "127.77.0.1")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"ALPHA_STACK_{name}_PORT", default))


@dataclass
class Service:
    """One server process of the stack and how to tell it is healthy."""

    name: str
    port: int
    health_path: str
    command: Callable[[StackPaths, dict], list[str]]
    env: Callable[[StackPaths, dict], dict[str, str]] = lambda paths, creds: {}
    start_timeout_s: float = 60
    healthy_codes: tuple[int, ...] = (200,)
    extra: dict = field(default_factory=dict)
    host: str = HOST
    # The generated secrets the process is given (credentials.json names): a running process
    # started without one of them is restarted by `up` (see _missing_secrets).
    secrets: tuple[str, ...] = ()
    scheme: str = "http"
    health: Callable[[Service, float], bool] | None = None
    """A health check other than `GET health_path` answering one of `healthy_codes`."""
    stop_signal: int = signal.SIGTERM
    cwd: Callable[[StackPaths], Path] | None = None
    """Where the server starts (default: its data folder), for one that must enter it as
    another user."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its data, logs, PIDs and secrets."""

    home: Path

    @property
    def credentials(self) -> Path:
        return self.home / "stack" / "credentials.json"

    @property
    def env_file(self) -> Path:
        return self.home / "stack.env"

    def pid_file(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def data_dir(self, name: str) -> Path:
        return self.home / "data" / name

    @property
    def labelstudio_venv(self) -> Path:
        default = Path.home() / ".cache" / "alpha" / f"labelstudio-{LABEL_STUDIO_VERSION}"
        return Path(os.environ.get("ALPHA_LABELSTUDIO_VENV", default))


def _bin(name: str) -> str:
    """A console script of this Python environment (weed, prefect), even if not on PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise ServiceUnavailable(f"`{name}` is not installed: run `pip install -e .` first.")
    return found


# Label Studio's own S3 identity may read and list, nothing else: it only presigns GETs of
# images (and lists the prefix once, when the storage is connected), so a key leaked from its
# database or from a presigned URL can neither write nor delete the bucket.
LABELSTUDIO_S3_ACTIONS = ("Read", "List")


def _s3_identities(creds: dict) -> list[dict]:
    """alpha's own identity (everything) and Label Studio's (read and list only)."""
    return [
        {"name": "alpha",
         "credentials": [{"accessKey": creds["s3_access_key_id"],
                          "secretKey": creds["s3_secret_access_key"]}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        {"name": "labelstudio",
         "credentials": [{"accessKey": creds["ls_s3_access_key_id"],
                          "secretKey": creds["ls_s3_secret_access_key"]}],
         "actions": list(LABELSTUDIO_S3_ACTIONS)},
    ]


# The servers `weed mini` runs behind the S3 port, at SeaweedFS's default ports unless set
# (ALPHA_STACK_S3_MASTER_PORT...), so that two stacks can share a machine. Each also listens
# on its port + 10000 for gRPC, and so does the S3 server: keep 10000 apart from all of them.
S3_INTERNAL_PORTS = {"master": _port("S3_MASTER", 9333), "volume": _port("S3_VOLUME", 9340),
                     "filer": _port("S3_FILER", 8888), "admin": _port("S3_ADMIN", 23646)}


def _s3_command(paths: StackPaths, creds: dict) -> list[str]:
    config = paths.data_dir("s3") / "s3.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    _write_private(config, json.dumps({"identities": _s3_identities(creds)}))
    return [
        _bin("weed"), f"-config_dir={_s3_security_config(paths)}", "mini",
        f"-dir={paths.data_dir('s3')}", f"-ip={HOST}",
        f"-ip.bind={HOST}", f"-s3.port={SERVICES['s3'].port}", f"-s3.config={config}",
        *(f"-{server}.port={port}" for server, port in S3_INTERNAL_PORTS.items()),
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]


JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")


def _s3_security_config(paths: StackPaths) -> Path:
    """A folder with SeaweedFS's `security.toml`, signing keys for its filer and volume ports.

    Behind the S3 port, `weed mini` also serves the filer (8888) and volume HTTP ports, which
    read, write and delete any object without credentials (the filer even answers
    `Access-Control-Allow-Origin: *`, so any web page a local browser opens could). With these
    keys they demand a token only the server itself mints. The tokens live seconds, so fresh
    keys at each start are enough and nothing needs to keep them.
    """
    folder = paths.data_dir("seaweedfs-config")
    text = "".join(f'[{section}]\nkey = "{secrets.token_urlsafe(32)}"\n'
                   "expires_after_seconds = 10\n\n" for section in JWT_SECTIONS)
    _write_private(folder / "security.toml", text)
    return folder


def _labelstudio_command(paths: StackPaths, creds: dict) -> list[str]:
    return [
        str(paths.labelstudio_venv / "bin" / "label-studio"), "start", "--no-browser",
        "--internal-host", HOST, "--port", str(SERVICES["labelstudio"].port),
        "--data-dir", str(paths.data_dir("labelstudio")),
    ]


def _labelstudio_env(paths: StackPaths, creds: dict) -> dict[str, str]:
    db = {}
    if postgres.chosen_db(paths.home) == "postgres":
        db = postgres.labelstudio_env(POSTGRES.host, POSTGRES.port, creds["postgres_password"])
    return {
        "LABEL_STUDIO_BASE_DATA_DIR": str(paths.data_dir("labelstudio")),
        "LABEL_STUDIO_USERNAME": creds["ls_username"],
        "LABEL_STUDIO_PASSWORD": creds["ls_password"],
        "LABEL_STUDIO_USER_TOKEN": creds["ls_token"],
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_S3_ENDPOINT": SERVICES["s3"].url,
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "HOME": str(paths.data_dir("labelstudio-home")),
        **_labelstudio_ssrf_env(),
        **db,
    }


# Label Studio 1.23.2's own list (core/utils/io.py validate_ip), the loopback network aside.
LABELSTUDIO_BANNED_SUBNETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
    "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96", "::ffff:0:0:0/96",
    "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28",
    "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)


def _labelstudio_ssrf_env() -> dict[str, str]:
    """Keep Label Studio's SSRF protection on, banning everything it bans by default except
    the webhook receiver's single address: all of 127.0.0.0/8 but WEBHOOK_HOST/32 (Label
    Studio bans by subnet only, so the receiver has a loopback address to itself)."""
    loopback = ipaddress.ip_network("127.0.0.0/8")
    allowed = ipaddress.ip_network(f"{WEBHOOK_HOST}/32")
    subnets = [*LABELSTUDIO_BANNED_SUBNETS,
               *sorted(str(n) for n in loopback.address_exclude(allowed))]
    return {"SSRF_PROTECTION_ENABLED": "true", "USE_DEFAULT_BANNED_SUBNETS": "false",
            "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(subnets)}


def _prefect_command(paths: StackPaths, creds: dict) -> list[str]:
    return [_bin("prefect"), "server", "start", "--host", HOST,
            "--port", str(SERVICES["prefect"].port), "--analytics-off"]


def _prefect_env(paths: StackPaths, creds: dict) -> dict[str, str]:
    """The server's API (everything under /api but GET /api/health and /api/ready) demands
    HTTP basic auth with the install's auth string; its own in-process clients send the same
    string. In the environment, never on the command line: every local user can read that."""
    return {
        "PREFECT_HOME": str(paths.data_dir("prefect")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_API_AUTH_STRING": creds["prefect_auth_string"],
        "PREFECT_API_AUTH_STRING": creds["prefect_auth_string"],
    }


def _webhook_command(paths: StackPaths, creds: dict) -> list[str]:
    service = SERVICES["webhook"]
    return [sys.executable, "-m", "infra.webhook", service.host, str(service.port)]


def _webhook_env(paths: StackPaths, creds: dict) -> dict[str, str]:
    return {
        "ALPHA_WEBHOOK_SECRET": creds["webhook_secret"],
        "PREFECT_API_URL": f"{SERVICES['prefect'].url}/api",
        "PREFECT_API_AUTH_STRING": creds["prefect_auth_string"],
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT),
                                                  os.environ.get("PYTHONPATH")) if p),
    }


def _postgres_command(paths: StackPaths, creds: dict) -> list[str]:
    return postgres.server_command(paths.home, POSTGRES.host, POSTGRES.port)


POSTGRES = Service(
    "postgres", _port("POSTGRES", 8432), "", _postgres_command, start_timeout_s=60,
    scheme="postgresql", health=lambda s, timeout_s: postgres.is_ready(s.host, s.port, timeout_s),
    # SIGINT is PostgreSQL's fast shutdown: SIGTERM would wait for Label Studio's connections.
    stop_signal=signal.SIGINT, cwd=lambda paths: postgres.cluster_dir(paths.home))
"""Label Studio's database when the install chose PostgreSQL (see `services`)."""

SERVICES: dict[str, Service] = {
    "s3": Service("s3", _port("S3", 8333), "/", _s3_command, start_timeout_s=60,
                  healthy_codes=(200, 403),
                  secrets=("s3_access_key_id", "s3_secret_access_key", "ls_s3_access_key_id",
                           "ls_s3_secret_access_key")),
    "labelstudio": Service("labelstudio", _port("LABELSTUDIO", 8080), "/health",
                           _labelstudio_command, _labelstudio_env, start_timeout_s=420,
                           secrets=("ls_username", "ls_password", "ls_token")),
    "prefect": Service("prefect", _port("PREFECT", 4200), "/api/health", _prefect_command,
                       _prefect_env, start_timeout_s=180, secrets=("prefect_auth_string",)),
    "webhook": Service("webhook", _port("WEBHOOK", 8765), "/health", _webhook_command,
                       _webhook_env, start_timeout_s=60, host=WEBHOOK_HOST,
                       secrets=("webhook_secret", "prefect_auth_string")),
}


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


PRIVATE_DIRS = ("data", "logs", "run", "stack")


def ensure_private_dirs(paths: StackPaths) -> None:
    """Make the stack's folders enterable by their owner only (mode 0700).

    The services create their own files with the usual umask (0644): Label Studio's database
    holds the S3 keys and the API token, SeaweedFS's volumes hold the images. A private
    folder keeps other local users out without depending on how each server writes.
    """
    for name in PRIVATE_DIRS:
        folder = paths.home / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)


# Secrets added after the first installs, each generated the first time `up` finds it
# missing from an existing credentials file (the other secrets are kept as they are).
ADDED_SECRETS: dict[str, Callable[[], str]] = {
    "webhook_secret": lambda: secrets.token_urlsafe(32),
    "prefect_auth_string": lambda: "alpha:" + secrets.token_urlsafe(32),
    "ls_s3_access_key_id": lambda: "alphals" + secrets.token_hex(8),
    "ls_s3_secret_access_key": lambda: secrets.token_urlsafe(30),
    "postgres_password": lambda: secrets.token_urlsafe(24),
}


def ensure_credentials(paths: StackPaths) -> dict:
    """Secrets generated once per install and kept in a file only the owner can read."""
    if paths.credentials.is_file():
        creds = json.loads(paths.credentials.read_text())
    else:
        creds = {
            "s3_access_key_id": "alpha" + secrets.token_hex(8),
            "s3_secret_access_key": secrets.token_urlsafe(30),
            "ls_username": os.environ.get("LABEL_STUDIO_USERNAME", "admin@alpha.local"),
            "ls_password": os.environ.get("LABEL_STUDIO_PASSWORD") or secrets.token_urlsafe(12),
            "ls_token": os.environ.get("LABEL_STUDIO_USER_TOKEN") or secrets.token_hex(20),
        }
    missing = [name for name in ADDED_SECRETS if name not in creds]
    for name in missing:  # an install from before that secret
        creds[name] = ADDED_SECRETS[name]()
    if missing or not paths.credentials.is_file():
        _write_private(paths.credentials, json.dumps(creds, indent=1))
    env_lines = [
        f"ALPHA_S3__ENDPOINT_URL={SERVICES['s3'].url}",
        f"ALPHA_S3__ACCESS_KEY_ID={creds['s3_access_key_id']}",
        f"ALPHA_S3__SECRET_ACCESS_KEY={creds['s3_secret_access_key']}",
        f"ALPHA_LABELSTUDIO__URL={SERVICES['labelstudio'].url}",
        f"ALPHA_LABELSTUDIO__API_KEY={creds['ls_token']}",
        f"ALPHA_LABELSTUDIO__S3_ACCESS_KEY_ID={creds['ls_s3_access_key_id']}",
        f"ALPHA_LABELSTUDIO__S3_SECRET_ACCESS_KEY={creds['ls_s3_secret_access_key']}",
        f"ALPHA_PREFECT__API_URL={SERVICES['prefect'].url}/api",
        f"ALPHA_PREFECT__AUTH_STRING={creds['prefect_auth_string']}",
        f"ALPHA_LABELSTUDIO__WEBHOOK_URL={SERVICES['webhook'].url}",
        f"ALPHA_LABELSTUDIO__WEBHOOK_SECRET={creds['webhook_secret']}",
    ]
    _write_private(paths.env_file, "\n".join(env_lines) + "\n")
    return creds


def ensure_labelstudio_installed(paths: StackPaths, log: Callable[[str], None]) -> None:
    """Label Studio pins packages that clash with Prefect, so it gets a venv of its own."""
    venv = paths.labelstudio_venv
    if (venv / "bin" / "label-studio").exists():
        return
    log(f"installing Label Studio {LABEL_STUDIO_VERSION} into {venv} (about 3 minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         f"label-studio=={LABEL_STUDIO_VERSION}"],
        capture_output=True, text=True,
    )
    if installed.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)  # a half-installed venv would look installed
        raise ServiceUnavailable(
            f"Installing Label Studio into {venv} failed:\n{installed.stderr[-2000:]}\n"
            "Check that PyPI is reachable, then run `alpha stack up` again."
        )


# ---- processes ---------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process, to tell our process from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def recorded_pid(paths: StackPaths, name: str) -> int | None:
    """The PID `up` recorded for a service, if that very process is still alive."""
    pid_file = paths.pid_file(name)
    if not pid_file.is_file():
        return None
    record = json.loads(pid_file.read_text())
    if _start_time(record["pid"]) != record["start_time"]:
        return None
    return record["pid"]


def _port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_healthy(service: Service, timeout_s: float = 3.0) -> bool:
    if service.health is not None:
        return service.health(service, timeout_s)
    try:
        response = httpx.get(service.url + service.health_path, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code in service.healthy_codes


def _wait_healthy(service: Service, pid: int, paths: StackPaths) -> None:
    deadline = time.monotonic() + service.start_timeout_s
    while time.monotonic() < deadline:
        if is_healthy(service):
            return
        if _start_time(pid) is None:
            raise ServiceUnavailable(
                f"{service.name} exited during start: see {paths.log_file(service.name)}"
            )
        time.sleep(1.0)
    raise ServiceUnavailable(
        f"{service.name} did not answer {service.url}{service.health_path} within "
        f"{service.start_timeout_s:.0f} s: see {paths.log_file(service.name)}"
    )


# The secrets every install had when PID records did not yet name them: what a process
# recorded that way was started with (see _missing_secrets).
SECRETS_BEFORE_RECORDS = frozenset({"s3_access_key_id", "s3_secret_access_key", "ls_username",
                                    "ls_password", "ls_token", "webhook_secret"})


def _missing_secrets(service: Service, paths: StackPaths) -> list[str]:
    """The service's secrets its running process was not started with: after an upgrade
    that adds one (ADDED_SECRETS), a server still running from before lacks it (SeaweedFS
    without Label Studio's identity, Prefect without its API auth string)."""
    record = json.loads(paths.pid_file(service.name).read_text())
    started_with = set(record.get("secrets", SECRETS_BEFORE_RECORDS))
    return [name for name in service.secrets if name not in started_with]


def start_service(service: Service, paths: StackPaths, creds: dict, log) -> None:
    if recorded_pid(paths, service.name) is not None and (
            missing := _missing_secrets(service, paths)):
        log(f"{service.name}: restarting: it was started without {', '.join(missing)}")
        stop_service(service, paths, log)
    if recorded_pid(paths, service.name) is not None:
        if is_healthy(service):
            log(f"{service.name}: already running at {service.url}")
            return
        log(f"{service.name}: running but not healthy yet, waiting")
        _wait_healthy(service, recorded_pid(paths, service.name) or 0, paths)
        return
    if _port_in_use(service.port, service.host):
        raise ServiceUnavailable(
            f"Port {service.port} for {service.name} is used by a process this stack did not "
            f"start: stop it, or set ALPHA_STACK_{service.name.upper()}_PORT to a free port."
        )
    log_path = paths.log_file(service.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    paths.data_dir(service.name).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env(paths, creds)}
    started = time.monotonic()
    with open(log_path, "ab") as log_handle:
        process = subprocess.Popen(
            service.command(paths, creds), stdout=log_handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
            cwd=service.cwd(paths) if service.cwd else paths.data_dir(service.name),
            start_new_session=True,
        )
    record = {"pid": process.pid, "start_time": _start_time(process.pid),
              "secrets": list(service.secrets)}
    _write_private(paths.pid_file(service.name), json.dumps(record))
    _wait_healthy(service, process.pid, paths)
    log(f"{service.name}: started at {service.url} in {time.monotonic() - started:.1f} s")


def stop_service(service: Service, paths: StackPaths, log, timeout_s: float = 30) -> None:
    pid = recorded_pid(paths, service.name)
    if pid is None:
        paths.pid_file(service.name).unlink(missing_ok=True)
        log(f"{service.name}: not running (nothing this stack started)")
        return
    os.killpg(pid, service.stop_signal)  # the group `up` made: the server and its children only
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _start_time(pid) is not None:
        time.sleep(0.3)
    if _start_time(pid) is not None:
        os.killpg(pid, signal.SIGKILL)
        log(f"{service.name}: did not stop on {signal.Signals(service.stop_signal).name} "
            f"within {timeout_s:.0f} s, killed")
    else:
        log(f"{service.name}: stopped")
    paths.pid_file(service.name).unlink(missing_ok=True)


def stack_paths() -> StackPaths:
    return StackPaths(alpha_home())


def services(paths: StackPaths) -> list[Service]:
    """The install's services in start order: PostgreSQL, when chosen, before Label Studio
    (which needs it at start) and so stopped after it."""
    database = [POSTGRES] if postgres.chosen_db(paths.home) == "postgres" else []
    return [SERVICES["s3"], *database, *(s for n, s in SERVICES.items() if n != "s3")]


def _choose_db(paths: StackPaths, db: str | None, log: Callable[[str], None]) -> None:
    """Keep the install's database choice, refusing to change it under a running Label
    Studio (it would keep the database it started with)."""
    current = postgres.chosen_db(paths.home)
    if db is None or db == current:
        return
    if recorded_pid(paths, "labelstudio") is not None:
        raise ServiceUnavailable(
            f"Label Studio is running on {current}: stop the stack (`alpha stack down`), "
            f"then `alpha stack up --db {db}`."
        )
    if (paths.data_dir("labelstudio") / "label_studio.sqlite3").is_file() or (
            postgres.cluster_dir(paths.home) / "PG_VERSION").is_file():
        log(f"labelstudio: switching from {current} to {db}; projects are not copied between "
            "databases (the bucket keeps every pulled label: `alpha relabel` refills a project)")
    postgres.choose_db(paths.home, db)


def up(log: Callable[[str], None] = print, db: str | None = None,
       only: Collection[str] | None = None) -> dict:
    """Start every service that is not running; return the generated credentials.

    `db` ("sqlite" or "postgres") chooses Label Studio's database for this install and is
    remembered; None keeps the install's choice (SQLite at first). `only` names the services
    to start (a test that needs S3 and Label Studio need not wait for Prefect).
    """
    paths = stack_paths()
    ensure_private_dirs(paths)
    _choose_db(paths, db, log)
    chosen = services(paths)
    if only is not None:
        unknown = set(only) - {s.name for s in chosen}
        if unknown:
            raise ConfigError(f"No service {', '.join(sorted(unknown))} in this stack: choose "
                              f"among {', '.join(s.name for s in chosen)}.")
        chosen = [s for s in chosen if s.name in only]
    creds = ensure_credentials(paths)
    ensure_labelstudio_installed(paths, log)
    if POSTGRES in chosen:
        postgres.ensure_cluster(paths.home, creds["postgres_password"], log)
    for service in chosen:
        start_service(service, paths, creds, log)
    return creds


def down(log: Callable[[str], None] = print) -> None:
    paths = stack_paths()
    chosen = services(paths)
    if POSTGRES not in chosen and recorded_pid(paths, POSTGRES.name) is not None:
        chosen.insert(1, POSTGRES)  # started before the install switched back to SQLite
    for service in reversed(chosen):
        stop_service(service, paths, log)


def status() -> list[dict]:
    paths = stack_paths()
    return [
        {
            "service": s.name,
            "url": s.url,
            "pid": recorded_pid(paths, s.name),
            "healthy": is_healthy(s, timeout_s=1.0),
            "log": str(paths.log_file(s.name)),
        }
        for s in services(paths)
    ]


def labelstudio_db() -> str:
    """The database Label Studio uses in this install ("sqlite" or "postgres")."""
    return postgres.chosen_db(stack_paths().home)
