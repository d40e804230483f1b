"""One typed settings object for the whole of alpha.

Settings come from, highest priority first: the environment (`ALPHA_` prefix, `__` between
section and field, e.g. `ALPHA_S3__BUCKET`), the env file the local stack writes with its
generated secrets (`$ALPHA_HOME/stack.env`), and a TOML config file (`alpha.toml`, or the
path in `ALPHA_CONFIG` or `--config`). They are validated once at start so a missing or
wrong setting stops the run before any work, with a message naming it and how to set it.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from alpha.errors import ConfigError

ENV_PREFIX = "ALPHA_"
DEFAULT_CONFIG_FILE = "alpha.toml"


def alpha_home() -> Path:
    """The folder that holds the local stack's data, logs, secrets and demo files."""
    return Path(os.environ.get("ALPHA_HOME", ".alpha")).resolve()


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _plain_secret(value: SecretStr) -> SecretStr:
    """Strip the whitespace a pasted key or token often carries; refuse an empty one, or one
    with inner spaces or control characters (an HTTP header cannot carry them, and the
    request would fail with a misleading network error). The value never enters the message.
    """
    secret = value.get_secret_value().strip()
    if not secret:
        raise ValueError("must not be empty")
    if any(c.isspace() or unicodedata.category(c)[0] == "C" for c in secret):
        raise ValueError("must not contain spaces or control characters")
    return SecretStr(secret)


def _http_url(value: str | None, empty_ok: bool) -> str | None:
    """Refuse a URL without http(s):// and a host ("localhost:8080" would otherwise fail later
    as an unreachable server, or crash the S3 client)."""
    if value in (None, "") and empty_ok:
        return value
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host, e.g. "
                         "http://127.0.0.1:8080")
    return value


class S3Settings(BaseModel):
    """Where the bucket lives. Leave `endpoint_url` empty for AWS S3."""

    endpoint_url: str | None = "http://127.0.0.1:8333"
    bucket: str = "alpha"
    prefix: str = "default"
    region: str = "us-east-1"
    access_key_id: SecretStr
    secret_access_key: SecretStr

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_plain_path(cls, value: str) -> str:
        from alpha.store import key_problem  # alpha.store imports this module

        value = value.strip("/")
        problem = key_problem(value)
        if problem is not None:
            raise ValueError(f"must be a path usable in S3 keys: {problem}")
        return unicodedata.normalize("NFC", value)

    @field_validator("bucket")
    @classmethod
    def _bucket_name_is_valid(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            raise ValueError(
                f"{value!r} is not a valid S3 bucket name: 3-63 lowercase letters, digits, dots "
                "and hyphens, starting and ending with a letter or digit"
            )
        return value

    @field_validator("access_key_id", "secret_access_key")
    @classmethod
    def _keys_are_plain(cls, value: SecretStr) -> SecretStr:
        return _plain_secret(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        return _http_url(value, empty_ok=True)


class LabelStudioSettings(BaseModel):
    """The Label Studio server that holds the annotators' queue."""

    url: str = "http://127.0.0.1:8080"
    api_key: SecretStr
    project_title: str | None = Field(
        default=None, description="Defaults to 'alpha: {s3.prefix}'."
    )
    public_url: str | None = Field(
        default=None, description="The URL to print for people, when it differs from `url`."
    )
    webhook_url: str | None = Field(
        default=None, description="The webhook receiver Label Studio calls when an annotation "
        "changes (the local stack's writes it); unset: no webhook, the scheduled pull only."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="The header secret the receiver checks (generated per "
        "install by the local stack)."
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None, description="The S3 key Label Studio reads the bucket with (it "
        "presigns the images' URLs with it, and keeps it in its database): give it read "
        "and list only. The local stack generates one; unset: s3.access_key_id, with a "
        "warning, since that key can also write and delete."
    )
    s3_secret_access_key: SecretStr | None = None

    @field_validator("api_key")
    @classmethod
    def _token_is_plain(cls, value: SecretStr) -> SecretStr:
        return _plain_secret(value)

    @field_validator("webhook_secret", "s3_access_key_id", "s3_secret_access_key")
    @classmethod
    def _optional_secret_is_plain(cls, value: SecretStr | None) -> SecretStr | None:
        return _plain_secret(value) if value is not None else None

    @model_validator(mode="after")
    def _webhook_has_its_secret(self) -> LabelStudioSettings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("webhook_url needs labelstudio.webhook_secret (the receiver "
                             "refuses requests without it)")
        return self

    @model_validator(mode="after")
    def _s3_key_is_a_pair(self) -> LabelStudioSettings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("labelstudio.s3_access_key_id and labelstudio.s3_secret_access_key "
                             "go together: set both (Label Studio's read-only S3 key) or "
                             "neither (Label Studio then uses s3.access_key_id)")
        return self

    @field_validator("url", "public_url", "webhook_url")
    @classmethod
    def _urls_are_urls(cls, value: str | None) -> str | None:
        return _http_url(value, empty_ok=False) if value is not None else None


class TaskSettings(BaseModel):
    """What is being labeled: the kind (any name in alpha.kinds.KINDS), its classes, and the
    kind's own options (`[task.options]`, validated by the kind's Options model)."""

    kind: str = "classification"
    labels: list[str] = Field(min_length=1)
    options: Any = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from alpha.kinds import KINDS

        if value not in KINDS:
            raise ValueError(f"unknown task kind {value!r}: choose one of {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _kind_options(self) -> TaskSettings:
        """Validate `options` with the kind's own model (imported only here, once)."""
        from alpha.kinds import get_kind
        from alpha.kinds.base import KindOptions

        kind = get_kind(self.kind)
        least = getattr(kind, "MIN_LABELS", 2)
        if len(self.labels) < least:
            raise ValueError(f"task.labels has {len(self.labels)} label(s), but task kind "
                             f"{self.kind!r} needs at least {least}")
        options_model = kind.Options
        if isinstance(self.options, options_model):
            return self
        raw = self.options.model_dump() if isinstance(self.options, KindOptions) else self.options
        try:
            self.options = options_model.model_validate(raw or {})
        except ValidationError as error:
            problems = "; ".join(
                f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in error.errors()
            )
            raise ValueError(f"{problems} (for task kind {self.kind!r})") from None
        for name in getattr(self.options, "label_fields", ()):
            value = getattr(self.options, name)
            for one in value if isinstance(value, list | tuple) else [value]:
                if one is not None and one not in self.labels:
                    raise ValueError(f"options.{name} {one!r} is not one of task.labels")
        return self

    @field_validator("labels")
    @classmethod
    def _labels_are_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("label names must be unique")
        if any(not name.strip() for name in value):
            raise ValueError("label names must not be empty")
        return value


class TrainSettings(BaseModel):
    """Model and training knobs."""

    image_size: int = Field(
        default=28, ge=8, le=1024, description="Width of the model's input (and its height "
        "unless image_height is set); images are resized to it."
    )
    image_height: int | None = Field(default=None, ge=8, le=1024)
    channels: Literal[1, 3] = 1
    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0, description="Peak of the one-cycle schedule.")
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    random_state: int = 0
    threads: int | None = Field(default=None, ge=1, description="None = torch's default")
    widths: tuple[int, ...] = Field(
        default=(16, 32, 64), min_length=1, description="Channels of each conv block."
    )
    weight_decay: float = Field(default=5e-4, ge=0, description="AdamW's decoupled decay.")
    min_steps: int = Field(
        default=500, ge=1, description="Train at least this many batches (more epochs if needed)."
    )
    refit: bool = Field(
        default=True,
        description="After calibrating on the held-out split, train again on every label.",
    )
    augment: bool = Field(default=False, description="Random shifts of up to 2 pixels.")


    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model's input."""
        return self.image_size, self.image_height or self.image_size


class LoopSettings(BaseModel):
    """How each active learning round runs."""

    batch_size: int = Field(default=100, ge=1, description="Images sent to annotators per round.")
    strategy: str = Field(
        default_factory=lambda: _strategies().DEFAULT_STRATEGY,
        description="How images are chosen: any of alpha.strategies.STRATEGIES.",
    )
    mc_samples: int = Field(
        default=20, ge=2, description="Monte-Carlo dropout samples for Bayesian strategies."
    )
    score_batch_size: int = Field(default=256, ge=1)
    cache_dir: str | None = Field(
        default=None, description="The local copy of the pool cache (alpha.pool_cache; the "
        "bucket holds it under cache/); unset: $ALPHA_HOME/cache. Safe to delete."
    )
    cache_shard_size: int = Field(
        default=1024, ge=1, description="Images per pool cache shard: the unit that is "
        "rebuilt when an image changes, and that a Dask worker scores."
    )
    score_prefetch: int = Field(
        default=2, ge=1, description="Shards read or built (GET and decode, 16 images at "
        "once each) ahead of the model while it scores."
    )
    score_threads: int | None = Field(
        default=None, ge=1, description="Torch threads of each Dask scoring worker (1 when "
        "unset); in-process scoring keeps torch's own setting."
    )
    dask_workers: int | None = Field(
        default=None, ge=1, description="Score the pool's shards as Prefect tasks on a local "
        "Dask cluster of this many worker processes; unset (and no dask_address): in the "
        "flow's own process."
    )
    dask_address: str | None = Field(
        default=None, description="The scheduler of an existing Dask cluster to score on "
        "(tcp://host:8786); its workers need alpha, the same settings and the bucket."
    )
    schedule_cron: str = "0 * * * *"
    min_new_labels: int = Field(
        default=0, ge=0, description="Retrain only when at least this many new labels arrived."
    )
    pull_interval_s: float = Field(
        default=120, ge=10, description="How often `alpha serve` pulls finished annotations "
        "between rounds (a webhook pulls sooner; this catches up on any it missed)."
    )
    runner_poll_s: float = Field(
        default=2, gt=0, le=60, description="How often `alpha serve` asks Prefect for runs "
        "that are due (Prefect's default is 10 s): a webhook's pull, and the training it "
        "starts, each wait up to this long before their process starts."
    )
    retrain_after: int | None = Field(
        default=None, ge=1, description="New usable labels that make a pull start "
        "train-and-select between rounds; unset: loop.batch_size (one batch annotated)."
    )
    queue_depth: int | None = Field(
        default=None, ge=1, description="Unannotated tasks to keep queued: pushes stop at it "
        "and refills top the queue up to it; unset: each round adds its whole batch."
    )
    queue_low: int | None = Field(
        default=None, ge=0, description="Refill once fewer tasks than this are queued "
        "(the low-water mark); unset: half of loop.queue_depth."
    )
    random_state: int = 0
    lock_wait_s: float = Field(
        default=3600, ge=0, description="How long a run waits for another run of the same "
        "project to finish (rounds run one at a time) before it gives up with a message."
    )

    @property
    def retrain_threshold(self) -> int:
        return self.retrain_after or self.batch_size

    @property
    def refill_below(self) -> int:
        if self.queue_low is not None:
            return self.queue_low
        return (self.queue_depth or 0) // 2

    @model_validator(mode="after")
    def _low_water_below_target(self) -> LoopSettings:
        if self.queue_low is not None and (self.queue_depth is None
                                           or self.queue_low >= self.queue_depth):
            raise ValueError("queue_low must be below loop.queue_depth (set both)")
        return self

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        names = _strategies().STRATEGIES
        if value not in names:
            raise ValueError(f"unknown strategy {value!r}: choose one of {', '.join(names)}")
        return value


def _strategies():
    """alpha.strategies.batch, imported when first needed: it pulls in scikit-learn, which
    every command that only reads settings would otherwise pay for."""
    from alpha.strategies import batch

    return batch


class PrefectSettings(BaseModel):
    """The Prefect server the flows report to."""

    api_url: str = "http://127.0.0.1:4200/api"
    auth_string: SecretStr | None = Field(
        default=None, description="`user:password` for a Prefect server started with "
        "PREFECT_SERVER_API_AUTH_STRING (the local stack's is generated per install); sent "
        "only to api_url. Unset: no basic auth (Prefect Cloud uses PREFECT_API_KEY)."
    )

    @field_validator("api_url")
    @classmethod
    def _api_url_is_a_url(cls, value: str) -> str:
        return _http_url(value, empty_ok=False)

    @field_validator("auth_string")
    @classmethod
    def _auth_string_is_plain(cls, value: SecretStr | None) -> SecretStr | None:
        return _plain_secret(value) if value is not None else None


class Settings(BaseSettings):
    """Everything alpha needs to run, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    # Sections default to empty so a missing section reports its missing fields by name.
    s3: S3Settings = Field(default={}, validate_default=True)
    labelstudio: LabelStudioSettings = Field(default={}, validate_default=True)
    task: TaskSettings = Field(default={}, validate_default=True)
    train: TrainSettings = TrainSettings()
    loop: LoopSettings = LoopSettings()
    prefect: PrefectSettings = PrefectSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
        )

    @model_validator(mode="before")
    @classmethod
    def _kind_train_defaults(cls, data: Any) -> Any:
        """The kind's training defaults (its TRAIN_DEFAULTS) for each [train] field the
        settings leave unset: TrainSettings' own defaults suit classification (28-pixel
        digits), not a segmentation model. A width given alone keeps images square."""
        if not isinstance(data, dict):
            return data
        task = data.get("task") or {}
        kind = task.get("kind") if isinstance(task, dict) else getattr(task, "kind", None)
        from alpha.kinds import KINDS, get_kind

        defaults = dict(get_kind(kind).TRAIN_DEFAULTS) if kind in KINDS else {}
        if not defaults:
            return data
        train = data.get("train") or {}
        if isinstance(train, TrainSettings):
            train = train.model_dump(include=train.model_fields_set)
        if not isinstance(train, dict):
            return data
        if "image_size" in train:
            defaults.pop("image_height", None)
        return {**data, "train": {**defaults, **train}}

    @property
    def project_title(self) -> str:
        return self.labelstudio.project_title or f"alpha: {self.s3.prefix}"

    def secret_values(self) -> list[str]:
        """Every secret the settings hold (each SecretStr of each section): what a message
        quoting a server's answer is scrubbed of, and what tests look for in outputs."""
        sections = (getattr(self, name) for name in type(self).model_fields)
        return [value.get_secret_value() for section in sections
                if isinstance(section, BaseModel)
                for name in type(section).model_fields
                if isinstance(value := getattr(section, name), SecretStr)]

    @property
    def labelstudio_s3_keys(self) -> tuple[SecretStr, SecretStr]:
        """The S3 key pair Label Studio reads the bucket with: its own read-only pair when
        set, else alpha's own (which a user of AWS may have only one of; the storage
        connection warns then, see alpha.labelstudio.connection)."""
        own = self.labelstudio
        if own.s3_access_key_id is not None and own.s3_secret_access_key is not None:
            return own.s3_access_key_id, own.s3_secret_access_key
        return self.s3.access_key_id, self.s3.secret_access_key


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def _describe(error: ValidationError, config_file: Path | None) -> str:
    where = f"in {config_file}" if config_file else f"in {DEFAULT_CONFIG_FILE} (none found)"
    lines = ["Invalid settings:"]
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not isinstance(p, int)) or ("(root)",)
        dotted = ".".join(str(p) for p in loc)
        shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
        section, _, field = dotted.rpartition(".")
        toml_hint = f"[{section}] {field}" if section else field
        problem = "is missing" if item["type"] == "missing" else item["msg"]
        problem = problem.removeprefix("Value error, ")  # pydantic's wrapper of our messages
        lines.append(
            f"  - {shown.lstrip('.') or dotted} {problem}: set {_env_name(loc)} or "
            f"`{toml_hint} = ...` {where}."
        )
    lines = list(dict.fromkeys(lines))
    if any(i["type"] == "missing" and i["loc"][0] in ("s3", "labelstudio") for i in error.errors()):
        lines.append(
            "  The local stack writes S3 keys and the Label Studio token: run `alpha stack up`."
        )
    return "\n".join(lines)


def _describe_env_error(error: SettingsError, env_path: Path) -> str:
    """Name the variables a parse error can come from (names only: values may be secrets)."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(error))
    section, source = found.groups() if found else ("", "")
    start = f"{ENV_PREFIX}{section.upper()}"
    names = sorted(n for n in os.environ if n.upper().startswith(start)) or [f"{start}__..."]
    where = f"the env file {env_path}" if source.startswith("DotEnv") else "the environment"
    return (
        f"Invalid settings: {', '.join(names)} in {where} cannot be parsed: a list must be "
        f"written as JSON, e.g. {ENV_PREFIX}TASK__LABELS='[\"cat\", \"dog\"]'. Fix the value."
    )


def resolve_config_file(config_file: str | Path | None = None) -> Path | None:
    """The config file to read: the argument, `$ALPHA_CONFIG`, or `./alpha.toml` if present."""
    chosen = config_file or os.environ.get("ALPHA_CONFIG")
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"Config file {path} does not exist: fix the path given with --config "
                "or ALPHA_CONFIG."
            )
        return path
    default = Path(DEFAULT_CONFIG_FILE).resolve()
    return default if default.is_file() else None


def load_settings(
    config_file: str | Path | None = None, env_file: str | Path | None = None, **overrides
) -> Settings:
    """Read and validate the settings; raise ConfigError naming every bad or missing one."""
    path = resolve_config_file(config_file)
    env_path = Path(env_file) if env_file else alpha_home() / "stack.env"

    class _Configured(Settings):
        model_config = SettingsConfigDict(
            toml_file=path, env_file=env_path if env_path.is_file() else None
        )

    try:
        return _Configured(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None
    except SettingsError as error:  # a list or section in the environment that is not JSON
        raise ConfigError(_describe_env_error(error, env_path)) from None
    except (OSError, ValueError) as error:  # unreadable or malformed TOML
        raise ConfigError(f"Cannot read config file {path}: {error}. Fix the file.") from None


def point_prefect_at(settings: Settings) -> None:
    """Make flows report to the configured Prefect server (unless PREFECT_API_URL is set).

    Call before Prefect is imported: without a server, each flow run would start a
    temporary one of its own (16-30 s) and no run would be visible afterwards.
    """
    auth = settings.prefect.auth_string
    set_prefect_env(settings.prefect.api_url, auth.get_secret_value() if auth else None)


def set_prefect_env(api_url: str, auth_string: str | None) -> None:
    """PREFECT_API_URL and PREFECT_API_AUTH_STRING for Prefect's client (and every process
    started from this one: `alpha serve`'s flow runs), each unless already set.

    The auth string goes only with its own server: when PREFECT_API_URL already names
    another one (Prefect Cloud, another team's server), sending it there would hand our
    password to that server, and Prefect's client sends basic auth in place of an API key.
    """
    os.environ.setdefault("PREFECT_API_URL", api_url)
    same_server = os.environ["PREFECT_API_URL"].rstrip("/") == api_url.rstrip("/")
    if auth_string and same_server:
        os.environ.setdefault("PREFECT_API_AUTH_STRING", auth_string)

