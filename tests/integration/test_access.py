"""A team's access, on the REAL stack: the Prefect server answers only those who hold the
install's API auth string, and Label Studio reads the bucket with an S3 key of its own that
may read and list but never write or delete, so a leaked Label Studio database or presigned
URL names no key that can change the bucket.

Secrets are compared into booleans before any assert: pytest prints both sides of a failed
comparison, and a CI log must not get the keys.
"""

from __future__ import annotations

import base64
import logging
import uuid
from secrets import token_urlsafe
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings
from pydantic import SecretStr

from alpha.errors import ServiceRefused
from alpha.labelstudio import LabelStudioProject
from alpha.store import make_s3_client
from flows.locks import ensure_lock
from infra import stack

pytestmark = pytest.mark.integration

API = f"{stack.SERVICES['prefect'].url}/api"


def _basic(auth_string: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


@pytest.fixture(scope="module")
def auth_string(settings) -> str:
    assert stack.is_healthy(stack.SERVICES["prefect"]), "the stack's Prefect server is down"
    assert settings.prefect.auth_string is not None, "stack.env has no ALPHA_PREFECT__AUTH_STRING"
    return settings.prefect.auth_string.get_secret_value()


# ---- Prefect -------------------------------------------------------------------------------
def test_prefect_api_answers_only_the_auth_string_but_its_health_check_anyone(auth_string):
    """Flow runs and deployment runs are what a stranger must not read or start."""
    assert httpx.get(f"{API}/health", timeout=30).status_code == 200  # `stack up` checks it
    wrong = "alpha:" + token_urlsafe(32)
    runs = f"{API}/flow_runs/filter"
    deployment_run = f"{API}/deployments/{uuid.uuid4()}/create_flow_run"
    senders = {"nothing": {}, "a wrong auth string": _basic(wrong),
               "it as a bearer token": {"Authorization": f"Bearer {auth_string}"},
               "garbage": {"Authorization": "Basic not-base64"},
               "the auth string": _basic(auth_string)}
    codes = {who: (httpx.post(runs, json={"limit": 1}, headers=headers, timeout=30).status_code,
                   httpx.post(deployment_run, json={}, headers=headers, timeout=30).status_code)
             for who, headers in senders.items()}
    # 404 with it: the 401s were the auth check, not a wrong route.
    assert codes == {**{who: (401, 401) for who in senders}, "the auth string": (200, 404)}


def test_a_wrong_auth_string_is_named_without_showing_it(auth_string, run_id):
    """Prefect's 401 arrives as an HTTP error with a traceback; alpha names the setting."""
    wrong = "alpha:" + token_urlsafe(32)
    name = f"alpha-access-{run_id}-round"
    with temporary_settings({PREFECT_API_AUTH_STRING: wrong}), \
            pytest.raises(ServiceRefused) as error:
        ensure_lock(name)
    message = str(error.value)
    assert "401" in message and "prefect.auth_string" in message
    assert "a wrong API auth string" in message
    shows_a_secret = wrong in message or auth_string in message
    assert not shows_a_secret
    ensure_lock(name)  # the right one (the environment's, from stack.env) is let in
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == 1
        client.delete_global_concurrency_limit_by_name(name)


# ---- Label Studio's S3 key -----------------------------------------------------------------
def _reader(settings):
    key_id, secret = settings.labelstudio_s3_keys
    return make_s3_client(settings.s3.model_copy(update={"access_key_id": key_id,
                                                         "secret_access_key": secret}))


def _refused(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as error:
        call()
    return (error.value.response["Error"]["Code"],
            error.value.response["ResponseMetadata"]["HTTPStatusCode"])


def test_label_studio_s3_key_reads_and_lists_but_cannot_write_or_delete(settings, store, images):
    assert settings.labelstudio.s3_access_key_id is not None, "the stack generates one"
    reader, bucket = _reader(settings), store.bucket
    image = images[0]
    assert reader.get_object(Bucket=bucket, Key=image.key)["Body"].read() == image.png
    assert reader.head_object(Bucket=bucket, Key=image.key)["ContentLength"] == len(image.png)
    listed = reader.list_objects_v2(Bucket=bucket, Prefix=store.key("images/"))
    assert image.key in {item["Key"] for item in listed["Contents"]}

    intruder = store.key("images/intruder.png")
    refusals = {
        "put": _refused(lambda: reader.put_object(Bucket=bucket, Key=intruder, Body=b"x")),
        "overwrite": _refused(lambda: reader.put_object(Bucket=bucket, Key=image.key,
                                                        Body=b"x")),
        "copy": _refused(lambda: reader.copy_object(
            Bucket=bucket, Key=intruder, CopySource={"Bucket": bucket, "Key": image.key})),
        "delete": _refused(lambda: reader.delete_object(Bucket=bucket, Key=image.key)),
        "bucket CORS": _refused(lambda: reader.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": [
                {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})),
    }
    assert refusals == {what: ("AccessDenied", 403) for what in refusals}, refusals
    # A batch delete is refused object by object, as on AWS: 200, each key in Errors.
    batch = reader.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": image.key}]})
    assert not batch.get("Deleted")
    assert [(e["Key"], e["Code"]) for e in batch["Errors"]] == [(image.key, "AccessDenied")]
    # Nor can the key presign a write for someone else.
    put_url = reader.generate_presigned_url("put_object", Params={"Bucket": bucket,
                                                                  "Key": intruder})
    assert httpx.put(put_url, content=b"x", timeout=30).status_code == 403
    assert store.get_bytes(image.key) == image.png
    assert not store.exists(intruder)


def _presigned_key_id(project: LabelStudioProject, task_id: int) -> tuple[str, bytes]:
    """The access key id in the presigned URL Label Studio serves for a task's image, and
    the bytes that URL gives."""
    auth = {"Authorization": f"Token {project.settings.labelstudio.api_key.get_secret_value()}"}
    task = httpx.get(f"{project.url}/api/tasks/{task_id}/", headers=auth, timeout=30).json()
    served = task["data"]["image"]
    served = served if served.startswith("http") else project.url + served
    answer = httpx.get(served, headers=auth, timeout=30)
    assert answer.is_redirect, answer.status_code  # presign=True: a redirect to S3
    location = answer.headers["location"]
    credential = parse_qs(urlsplit(location).query)["X-Amz-Credential"][0]
    return credential.split("/")[0], httpx.get(location, timeout=30).content


def test_label_studio_presigns_with_its_own_key_not_alpha_s(settings, project, images,
                                                            push_items):
    created = project.push(push_items(images[:2]), model_version="m-1", round_id="r-0001")
    by_id = {image.image_id: image for image in images}
    ls_key = settings.labelstudio_s3_keys[0].get_secret_value()
    admin_key = settings.s3.access_key_id.get_secret_value()
    for image_id, task_id in created.created.items():
        key_id, content = _presigned_key_id(project, task_id)
        names_ls_key, names_admin_key = key_id == ls_key, key_id == admin_key
        assert names_ls_key and not names_admin_key
        assert content == by_id[image_id].png


def test_a_storage_made_with_alpha_s_key_warns_and_moves_to_label_studio_s_own(
    settings, store, images, push_items, project_opener, caplog
):
    """No key of Label Studio's own (a user with one AWS key): the storage reads with
    alpha's and says so. Once one is configured (an install upgraded to this stack), the
    next call gives the existing storage the new key."""
    title = f"{settings.project_title} upgraded"
    without = settings.labelstudio.model_copy(update={
        "project_title": title, "s3_access_key_id": None, "s3_secret_access_key": None})
    before = settings.model_copy(update={"labelstudio": without})
    after = settings.model_copy(update={"labelstudio": settings.labelstudio.model_copy(
        update={"project_title": title})})
    with project_opener(before, store) as old:
        with caplog.at_level(logging.WARNING, logger="alpha.labelstudio"):
            task_id = next(iter(old.push(push_items(images[:1]), model_version="m-1",
                                         round_id="r-0001").created.values()))
        assert any("which can also write and delete" in r.getMessage() for r in caplog.records)
        admin_key = settings.s3.access_key_id.get_secret_value()
        ls_key = settings.labelstudio_s3_keys[0].get_secret_value()
        key_id, _ = _presigned_key_id(old, task_id)
        names_admin_key = key_id == admin_key
        assert names_admin_key

        caplog.clear()
        upgraded = LabelStudioProject(after, store)
        assert upgraded.ensure_project() == old.project_id
        assert len(upgraded.client.import_storage.s3.list(project=old.project_id)) == 1
        key_id, content = _presigned_key_id(upgraded, task_id)
        names_ls_key = key_id == ls_key
        assert names_ls_key and content == images[0].png
        assert not any("write and delete" in r.getMessage() for r in caplog.records)


def test_a_key_label_studio_cannot_list_with_is_named_without_showing_it(
    settings, store, images, project_opener
):
    """What a Label Studio key the S3 server does not know gives (an S3 server still
    running from before the key): the setting to fix, not the key."""
    wrong_id, wrong_secret = "alphals" + uuid.uuid4().hex[:16], token_urlsafe(30)
    unknown = settings.labelstudio.model_copy(update={
        "project_title": f"{settings.project_title} unknown key",
        "s3_access_key_id": SecretStr(wrong_id), "s3_secret_access_key": SecretStr(wrong_secret)})
    with project_opener(settings.model_copy(update={"labelstudio": unknown}), store) as project, \
            pytest.raises(ServiceRefused) as error:
        project.ensure_project()
    message = str(error.value)
    assert "labelstudio.s3_access_key_id may read and list" in message
    assert wrong_id not in message and wrong_secret not in message
