"""Lock names: one per project and purpose, valid as Prefect names whatever the prefix."""

from __future__ import annotations

from alpha.config import Settings
from flows.locks import lock_name


def test_each_project_and_purpose_has_its_own_lock_with_a_name_prefect_accepts(settings):
    nested = Settings(**{**settings.model_dump(), "s3": {
        **settings.s3.model_dump(), "access_key_id": "k", "secret_access_key": "s",
        "prefix": "team/a b%"}})
    assert lock_name(settings, "round") == "alpha-proj-round"
    assert lock_name(settings, "pull") == "alpha-proj-pull"
    assert lock_name(nested, "round") == "alpha-team-a-b-round"  # no '/' or '%'
