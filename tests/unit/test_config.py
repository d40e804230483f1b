"""Settings: loaded from file + environment, every bad or missing one named at start."""

import os

import pytest

from alpha.config import load_settings
from alpha.errors import ConfigError
from alpha.strategies import DEFAULT_STRATEGY, STRATEGIES

GOOD_TOML = """
[s3]
prefix = "proj"
access_key_id = "AKIAFILE"
secret_access_key = "file-secret"

[labelstudio]
api_key = "token-from-file"

[task]
labels = ["cat", "dog"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("ALPHA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALPHA_HOME", str(tmp_path / "home"))  # no stack.env there
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text, name="alpha.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_is_read_and_defaults_fill_the_rest(tmp_path):
    settings = load_settings(write(tmp_path, GOOD_TOML))
    assert settings.s3.prefix == "proj"
    assert settings.task.labels == ["cat", "dog"]
    assert settings.s3.access_key_id.get_secret_value() == "AKIAFILE"
    assert settings.loop.batch_size == 100
    assert settings.loop.strategy == DEFAULT_STRATEGY and DEFAULT_STRATEGY in STRATEGIES
    assert settings.project_title == "alpha: proj"


def test_default_alpha_toml_in_working_directory_is_used(tmp_path):
    write(tmp_path, GOOD_TOML)
    assert load_settings().s3.prefix == "proj"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHA_S3__BUCKET", "from-env")
    monkeypatch.setenv("ALPHA_LOOP__BATCH_SIZE", "7")
    settings = load_settings(write(tmp_path, GOOD_TOML))
    assert settings.s3.bucket == "from-env"
    assert settings.loop.batch_size == 7


def test_stack_env_file_supplies_generated_secrets(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.env").write_text(
        "ALPHA_S3__ACCESS_KEY_ID=gen-key\nALPHA_S3__SECRET_ACCESS_KEY=gen-secret\n"
        "ALPHA_LABELSTUDIO__API_KEY=gen-token\n"
    )
    settings = load_settings(write(tmp_path, '[task]\nlabels = ["a", "b"]\n'))
    assert settings.s3.access_key_id.get_secret_value() == "gen-key"
    assert settings.labelstudio.api_key.get_secret_value() == "gen-token"


def test_missing_settings_are_named_with_how_to_set_them(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, '[task]\nlabels = ["a", "b"]\n'))
    message = str(error.value)
    assert "s3.access_key_id is missing" in message
    assert "ALPHA_S3__ACCESS_KEY_ID" in message
    assert "labelstudio.api_key is missing" in message
    assert "alpha stack up" in message


def test_missing_task_labels_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"task.labels is missing.*ALPHA_TASK__LABELS"):
        load_settings(write(tmp_path, GOOD_TOML.replace('[task]\nlabels = ["cat", "dog"]', "")))


@pytest.mark.parametrize(
    ("replace", "by", "named"),
    [
        ('labels = ["cat", "dog"]', 'labels = ["cat"]', "task.labels"),
        ('labels = ["cat", "dog"]', 'labels = ["cat", "cat"]', "task.labels"),
        ('prefix = "proj"', 'prefix = "../escape"', "s3.prefix"),
        ("[task]", "[loop]\nbatch_size = 0\n[task]", "loop.batch_size"),
        ("[task]", '[train]\nepochs = "many"\n[task]', "train.epochs"),
        ("[task]", '[loop]\nstrategy = "psychic"\n[task]', "loop.strategy"),
        ("[task]", '[loop]\nmc_samples = 1\n[task]', "loop.mc_samples"),
        ("[task]", '[nonsense]\nx = 1\n[task]', "nonsense"),
        ('prefix = "proj"', 'prefix = "a//b"', "s3.prefix must be a path usable in S3 keys: no "
                                                "empty, '.' or '..' parts: set ALPHA_S3__PREFIX"),
        ('prefix = "proj"', 'prefix = "a\\\\b"', "s3.prefix must be a path usable in S3 keys: "
                                                 "must be a relative path"),
        ('prefix = "proj"', 'prefix = "why?"', "s3.prefix must be a path usable in S3 keys: '?'"),
        ('[s3]', '[s3]\nbucket = "My_Bucket"', "s3.bucket 'My_Bucket' is not a valid S3 bucket "
                                               "name: 3-63 lowercase letters"),
        ('[s3]', '[s3]\nbucket = 5', "s3.bucket Input should be a valid string"),
        ('[s3]', '[s3]\nendpoint_url = "127.0.0.1:8333"',
         "s3.endpoint_url '127.0.0.1:8333' is not an http:// or https:// URL"),
        ('[labelstudio]', '[labelstudio]\nurl = "localhost:8080"',
         "labelstudio.url 'localhost:8080' is not an http:// or https:// URL"),
        ('"token-from-file"', '""', "labelstudio.api_key must not be empty: set "
                                    "ALPHA_LABELSTUDIO__API_KEY"),
        ('"AKIAFILE"', '"   "', "s3.access_key_id must not be empty"),
        ('[labelstudio]', '[labelstudio]\ns3_access_key_id = "LSREADER"',
         "labelstudio.s3_access_key_id and labelstudio.s3_secret_access_key go together"),
        ('[labelstudio]', '[labelstudio]\ns3_secret_access_key = "ls-secret"',
         "labelstudio.s3_access_key_id and labelstudio.s3_secret_access_key go together"),
        ("[task]", '[prefect]\nauth_string = "alpha:two words"\n[task]',
         "prefect.auth_string must not contain spaces"),
        ('labels = ["cat", "dog"]', 'labels = "cat,dog"',
         "task.labels Input should be a valid list"),
        ("[task]", '[train]\nchannels = 2\n[task]', "train.channels Input should be 1 or 3"),
        ("[task]", '[train]\nimage_size = 3.5\n[task]', "train.image_size Input should be a valid "
                                                      "integer, got a number with a fractional"),
        ("[task]", '[train]\nrefit = "maybe"\n[task]', "train.refit Input should be a valid "
                                                     "boolean"),
    ],
)
def test_invalid_values_are_named(tmp_path, replace, by, named):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, GOOD_TOML.replace(replace, by)))
    assert named in str(error.value)


def test_secrets_never_appear_in_the_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        bad = GOOD_TOML.replace("[task]", "[loop]\nbatch_size = -1\n[task]")
        load_settings(write(tmp_path, bad))
    assert "file-secret" not in str(error.value)
    assert "token-from-file" not in str(error.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_malformed_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_settings(write(tmp_path, "[s3\nprefix = "))


def test_each_wrong_item_of_a_list_is_named_once(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, GOOD_TOML.replace('["cat", "dog"]', '["cat", 2, 3]')))
    lines = str(error.value).splitlines()
    assert lines[1:] == [
        f"  - task.labels[{i}] Input should be a valid string: set ALPHA_TASK__LABELS or "
        f"`[task] labels = ...` in {tmp_path / 'alpha.toml'}." for i in (1, 2)]


def test_a_list_in_the_environment_that_is_not_json_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHA_TASK__LABELS", "cat,dog")
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, GOOD_TOML))
    assert str(error.value) == (
        "Invalid settings: ALPHA_TASK__LABELS in the environment cannot be parsed: a list must "
        """be written as JSON, e.g. ALPHA_TASK__LABELS='["cat", "dog"]'. Fix the value.""")


def test_pasted_secrets_lose_surrounding_whitespace(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHA_LABELSTUDIO__API_KEY", " token-from-env\r\n")
    settings = load_settings(write(tmp_path, GOOD_TOML))
    assert settings.labelstudio.api_key.get_secret_value() == "token-from-env"


def test_a_secret_with_inner_spaces_is_refused_without_showing_it(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, GOOD_TOML.replace("file-secret", "file secret")))
    message = str(error.value)
    assert "s3.secret_access_key must not contain spaces or control characters" in message
    assert "file secret" not in message and "file-secret" not in message


def test_a_kind_brings_its_own_training_defaults_for_what_train_leaves_unset(
    tmp_path, monkeypatch
):
    from alpha.config import TrainSettings
    from alpha.kinds import semantic

    semantic_toml = GOOD_TOML.replace("[task]\n", '[task]\nkind = "semantic"\n')
    train = load_settings(write(tmp_path, semantic_toml)).train
    assert train.input_size == (120, 90) and train.widths == (16, 32, 64, 128)
    assert {name: getattr(train, name) for name in semantic.TRAIN_DEFAULTS} == {
        **semantic.TRAIN_DEFAULTS}
    # What [train] or the environment sets wins; a width alone keeps the input square.
    monkeypatch.setenv("ALPHA_TRAIN__EPOCHS", "3")
    given = load_settings(write(tmp_path, semantic_toml + "[train]\nimage_size = 64\n")).train
    assert (given.input_size, given.epochs, given.batch_size) == ((64, 64), 3, 8)
    # Classification keeps TrainSettings' own defaults.
    monkeypatch.delenv("ALPHA_TRAIN__EPOCHS")
    assert load_settings(write(tmp_path, GOOD_TOML)).train == TrainSettings()


def test_label_studio_reads_the_bucket_with_its_own_key_or_else_alpha_s(tmp_path, monkeypatch):
    """Without a key of its own (a user with one AWS key), Label Studio keeps working with
    alpha's: the storage connection warns (see tests/integration/test_labelstudio.py)."""
    fallback = load_settings(write(tmp_path, GOOD_TOML)).labelstudio_s3_keys
    assert [k.get_secret_value() for k in fallback] == ["AKIAFILE", "file-secret"]
    monkeypatch.setenv("ALPHA_LABELSTUDIO__S3_ACCESS_KEY_ID", "LSREADER")
    monkeypatch.setenv("ALPHA_LABELSTUDIO__S3_SECRET_ACCESS_KEY", "ls-secret")
    own = load_settings(write(tmp_path, GOOD_TOML)).labelstudio_s3_keys
    assert [k.get_secret_value() for k in own] == ["LSREADER", "ls-secret"]


def test_the_prefect_auth_string_goes_to_its_own_server_only(tmp_path, monkeypatch):
    from alpha.config import point_prefect_at

    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.env").write_text("ALPHA_PREFECT__API_URL=http://127.0.0.1:4200/api\n"
                                    "ALPHA_PREFECT__AUTH_STRING=alpha:generated-secret\n")
    settings = load_settings(write(tmp_path, GOOD_TOML))
    assert settings.prefect.auth_string.get_secret_value() == "alpha:generated-secret"
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)
    point_prefect_at(settings)
    assert os.environ["PREFECT_API_AUTH_STRING"] == "alpha:generated-secret"

    # PREFECT_API_URL naming another server (Prefect Cloud, say): our password stays here.
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/a/workspaces/w")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    point_prefect_at(settings)
    assert "PREFECT_API_AUTH_STRING" not in os.environ


def test_secret_values_are_every_secret_of_every_section_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHA_LABELSTUDIO__S3_ACCESS_KEY_ID", "LSREADER")
    monkeypatch.setenv("ALPHA_LABELSTUDIO__S3_SECRET_ACCESS_KEY", "ls-secret")
    monkeypatch.setenv("ALPHA_PREFECT__AUTH_STRING", "alpha:prefect-secret")
    found = load_settings(write(tmp_path, GOOD_TOML)).secret_values()
    assert sorted(found) == sorted(["AKIAFILE", "file-secret", "token-from-file", "LSREADER",
                                    "ls-secret", "alpha:prefect-secret"])
