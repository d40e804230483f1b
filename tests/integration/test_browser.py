"""A pushed task, opened by a person's browser: the image shows and the model's guess is set.

This is what an annotator sees, so it checks the parts no API call can: the labeling page
fetches the presigned S3 image from another origin (bucket CORS), and the pre-annotation is
loaded into the choices. Runs Debian's chromium headless through Playwright.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration





def test_a_pushed_task_shows_its_image_and_preannotation(
    browser, project, images, push_items, labels, ls_credentials, task_page, tmp_path
):
    image = images[0]
    item = push_items([image], seed=5)[0]
    guess = item.result[0]["value"]["choices"][0]
    task_id = project.push([item], model_version="m-browser", round_id="r-browser").created[
        image.image_id]

    # Label Studio registers a service worker that may make the image request itself, out of
    # the page's sight; blocking it keeps the S3 request (and its CORS answer) observable.
    context = browser.new_context(viewport={"width": 1400, "height": 900},
                                  service_workers="block")
    page = context.new_page()
    s3_responses = []
    context.on("response", lambda r: s3_responses.append(r)
               if r.url.startswith(project.store.endpoint) else None)
    task_page(page, project, ls_credentials, task_id, 32)
    checked = page.evaluate(
        "() => Array.from(document.querySelectorAll('input[type=checkbox]:checked'))"
        ".map(i => (i.closest('label') || {}).innerText || '')"
        ".filter(t => t.trim().length > 0)"
    )
    page.get_by_text("m-browser").first.wait_for(timeout=10_000)
    shot = tmp_path / "labeling.png"
    page.screenshot(path=str(shot))  # kept under pytest's basetemp for a person to look at
    context.close()

    assert [text.split("[")[0].strip() for text in checked] == [guess], checked
    fetched = [r for r in s3_responses if image.key in r.url]
    assert fetched and fetched[-1].status == 200
    assert fetched[-1].headers.get("access-control-allow-origin") == project.url
