"""Presets (issue 14, item 2): GET /api/v1/webhook-presets/, and each preset's request for a
missed call checked against the shape its vendor documents:

- Webex Messages API, "Create a Message": POST https://webexapis.com/v1/messages, bearer
  token, JSON with `roomId` and `text` and/or `markdown` (strings, at most 7439 bytes).
- Microsoft Teams Workflows webhook: a `message` activity whose `attachments` hold one
  `application/vnd.microsoft.card.adaptive` attachment, its `content` an AdaptiveCard
  (`type`, `version` 1.4/1.5 for Teams, `body` of elements each with a `type`).
- Slack incoming webhook: JSON with `text` (the notification fallback when `blocks` are
  given); a `section` block has `text` {`type`: `mrkdwn`|`plain_text`, `text`} (≤ 3000).
- ServiceNow Table API: POST /api/now/table/incident, Basic auth, a JSON object of the
  incident's columns (`short_description` a string, other columns strings).
- Generic JSON: the seed body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from rest_framework.test import APIClient

from tests.test_webhooks import (  # noqa: F401  (local: a fixture)
    attempt_one,
    ingest,
    local,
    make_webhook,
    reference_payload,
    reference_row,
    write_cdr_file,
)
from webhooks.bodies import record_body, sample_call, sample_cdr, template_problem
from webhooks.models import Delivery, Header, Webhook
from webhooks.presets import PRESETS, Preset

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("premium", "local")]

# A missed call from 4085551234 to 2001 that rang until the caller gave up: no answer (19).
MISSED = {
    "callingPartyNumber": "4085551234",
    "originalCalledPartyNumber": "2001",
    "finalCalledPartyNumber": "2001",
    "origCause_value": "0",
    "destCause_value": "19",
}


def rendered(key: str, cdr: dict[str, Any] | None = None) -> dict[str, Any]:
    preset = PRESETS[key]
    webhook = Webhook(name="Missed calls", meta=preset.meta, body_template=preset.body_template)
    cdr = cdr if cdr is not None else {**sample_cdr(), **MISSED}
    return json.loads(record_body(webhook=webhook, cdr=cdr, event_id="msg_1"))


def assert_readable(text: str) -> None:
    """A person can tell what happened: missed, who called, whom, when and why."""
    for fact in ("Missed call", "4085551234", "2001", "2023-11-06T14:57:22Z", "No answer"):
        assert fact in text, (fact, text)


def test_the_api_lists_every_preset(api: APIClient) -> None:
    presets = api.get("/api/v1/webhook-presets/").json()
    assert [p["key"] for p in presets] == ["webex", "teams", "slack", "servicenow", "json"]
    webex = api.get("/api/v1/webhook-presets/webex/").json()
    assert webex["auth"] == {"type": "bearer", "fill": ["token"]}
    assert webex["method"] == "POST" and webex["url"] == "https://webexapis.com/v1/messages"
    assert api.get("/api/v1/webhook-presets/nope/").status_code == 404
    assert APIClient().get("/api/v1/webhook-presets/").status_code in (401, 403)


@pytest.mark.parametrize("preset", PRESETS.values(), ids=list(PRESETS))
def test_every_preset_saves_in_both_scopes(preset: Preset) -> None:
    for scope in Webhook.Scope.values:
        assert (
            template_problem(
                source=preset.body_template,
                content_type=preset.content_type,
                scope=scope,
                name="x",
                meta=preset.meta,
            )
            is None
        )


def test_webex_posts_a_markdown_message_to_a_room() -> None:
    preset = PRESETS["webex"]
    assert (preset.method, preset.url) == ("POST", "https://webexapis.com/v1/messages")
    assert preset.auth.type == "bearer" and preset.auth.fill == ("token",)
    body = rendered("webex")
    assert set(body) == {"roomId", "text", "markdown"}
    assert body["roomId"] == "ROOM_ID"
    assert all(isinstance(body[key], str) for key in body)
    assert all(len(body[key].encode()) <= 7439 for key in ("text", "markdown"))
    assert_readable(body["markdown"].replace("**", ""))
    assert_readable(body["text"])


def test_teams_posts_an_adaptive_card_message() -> None:
    body = rendered("teams")
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] in ("1.4", "1.5")
    assert isinstance(card["body"], list) and all("type" in element for element in card["body"])
    facts = next(e for e in card["body"] if e["type"] == "FactSet")["facts"]
    assert all(set(fact) == {"title", "value"} for fact in facts)
    assert all(isinstance(fact["value"], str) for fact in facts)
    text = " ".join([card["body"][0]["text"], *(f"{f['title']} {f['value']}" for f in facts)])
    assert_readable(text)


def test_slack_posts_text_with_a_mrkdwn_section() -> None:
    body = rendered("slack")
    assert isinstance(body["text"], str)
    assert_readable(body["text"])
    (section,) = body["blocks"]
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn" and len(section["text"]["text"]) <= 3000
    assert_readable(section["text"]["text"].replace("*", ""))


def test_servicenow_creates_an_incident_with_basic_auth() -> None:
    preset = PRESETS["servicenow"]
    assert preset.method == "POST" and preset.url.endswith("/api/now/table/incident")
    assert preset.auth.type == "basic" and preset.auth.fill == ("username", "password")
    assert ("Accept", "application/json") in preset.headers
    body = rendered("servicenow")
    assert {"short_description", "description"} <= set(body)
    assert all(isinstance(value, str) for value in body.values())
    assert len(body["short_description"]) <= 160
    assert_readable(body["description"])


def test_generic_json_is_the_seed_body() -> None:
    assert PRESETS["json"].body_template == ""
    webhook = Webhook(name="Caller ID Webhook", meta={"event": "missed call"})
    body = record_body(webhook=webhook, cdr=sample_cdr(), event_id="msg_1")
    assert json.loads(body) == reference_payload()


def test_a_call_scope_preset_reads_the_call() -> None:
    preset = PRESETS["teams"]
    webhook = Webhook(name="Calls", scope="call", body_template=preset.body_template)
    from webhooks.bodies import call_body

    call, cdrs, cmrs = sample_call()
    body = json.loads(call_body(webhook=webhook, objects=(call, cdrs, cmrs), event_id="msg_1"))
    facts = body["attachments"][0]["content"]["body"][1]["facts"]
    assert {"title": "Time", "value": "2023-11-06T14:57:22Z"} in facts


def test_a_teams_preset_posts_a_readable_card_for_a_stored_missed_call(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/workflow", method="POST").respond_with_data("", status=202)
    preset = PRESETS["teams"]
    make_webhook(
        httpserver.url_for("/workflow"),
        [("dateTimeConnect", "eq", "Never")],
        name="Missed calls",
        method=preset.method,
        content_type=preset.content_type,
        body_template=preset.body_template,
    )
    row = {**reference_row(), **MISSED}
    ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [row]))
    attempt = attempt_one(Delivery.objects.get().pk)
    assert attempt is not None and attempt.status_code == 202
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/json"
    card = json.loads(request.get_data())["attachments"][0]["content"]
    text = json.dumps(card, ensure_ascii=False)
    assert_readable(text)


def test_a_webex_preset_posts_to_the_messages_api_shape(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/v1/messages", method="POST").respond_with_json({"id": "m1"})
    preset = PRESETS["webex"]
    webhook = make_webhook(
        httpserver.url_for("/v1/messages"),
        meta={"roomId": "Y2lzY29zcGFyazovL3VzL1JPT00vYWJj"},
        body_template=preset.body_template,
    )
    Header.objects.create(webhook=webhook, name="Authorization", value="Bearer secret-token")
    row = {**reference_row(), **MISSED}
    ingest(write_cdr_file(tmp_path / "cdr_StandAloneCluster_01_202311061457_1", [row]))
    attempt = attempt_one(Delivery.objects.get().pk)
    assert attempt is not None and attempt.status_code == 200
    ((request, _),) = httpserver.log
    body = json.loads(request.get_data())
    assert body["roomId"] == "Y2lzY29zcGFyazovL3VzL1JPT00vYWJj"
    assert_readable(body["text"])


def test_the_admin_add_form_starts_from_a_preset(admin_client: Any) -> None:
    page = admin_client.get("/admin/webhooks/webhook/add/?preset=servicenow")
    assert page.status_code == 200
    text = page.content.decode()
    assert "https://INSTANCE.service-now.com/api/now/table/incident" in text
    assert "short_description" in text and "Accept" in text and "application/json" in text
    assert "basic (username, password)" in text
    # Without a preset: the plain form.
    plain = admin_client.get("/admin/webhooks/webhook/add/").content.decode()
    assert "short_description" not in plain
