"""Presets: a starting point for the receivers people use, which the operator then edits.

Each fills the method, the body template, the content type, headers, `meta` members the
template reads (e.g. the Webex room) and names the auth type with the members the operator
must fill. The templates read only `cdr` and `decoded`, so they serve record and call scope
alike (in call scope `cdr` is the first leg and `decoded` the call's answer, cause, times).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The facts a person reads, shared by the presets: "Missed call from 1000 to 2000 at
# 2023-11-06T14:57:22Z (No answer)".
_SUMMARY = """\
{%- set what = "Answered call" if decoded.answered else "Missed call" -%}
{%- set caller = cdr.callingPartyNumber or "unknown" -%}
{%- set dialled = cdr.originalCalledPartyNumber or cdr.finalCalledPartyNumber
                  or "unknown" -%}
{%- set at = decoded.started or decoded.dateTimeOrigination or "unknown time" -%}
{%- set line = what ~ " from " ~ caller ~ " to " ~ dialled ~ " at " ~ at
               ~ " (" ~ decoded.cause ~ ")" -%}
"""

WEBEX = (
    _SUMMARY
    + """\
{"roomId": {{ meta.roomId|tojson }},
 "text": {{ line|tojson }},
 "markdown": {{ ("**" ~ what ~ "** from **" ~ caller ~ "** to **" ~ dialled ~ "**  \\n"
                ~ "Time: " ~ at ~ "  \\nCause: " ~ decoded.cause)|tojson }}}
"""
)

TEAMS = (
    _SUMMARY
    + """\
{"type": "message",
 "attachments": [{
  "contentType": "application/vnd.microsoft.card.adaptive",
  "contentUrl": null,
  "content": {
   "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
   "type": "AdaptiveCard",
   "version": "1.4",
   "body": [
    {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
     "text": {{ (what ~ " from " ~ caller)|tojson }}},
    {"type": "FactSet", "facts": [
     {"title": "Caller", "value": {{ caller|tojson }}},
     {"title": "Dialled", "value": {{ dialled|tojson }}},
     {"title": "Time", "value": {{ at|tojson }}},
     {"title": "Cause", "value": {{ decoded.cause|tojson }}},
     {"title": "Webhook", "value": {{ name|tojson }}}
    ]}
   ]
  }
 }]}
"""
)

SLACK = (
    _SUMMARY
    + """\
{"text": {{ line|tojson }},
 "blocks": [
  {"type": "section", "text": {"type": "mrkdwn",
   "text": {{ ("*" ~ what ~ "* from *" ~ caller ~ "* to *" ~ dialled ~ "*\\nTime: " ~ at
              ~ "\\nCause: " ~ decoded.cause)|tojson }}}}
 ]}
"""
)

SERVICENOW = (
    _SUMMARY
    + """\
{"short_description": {{ (what ~ " from " ~ caller ~ " to " ~ dialled)|tojson }},
 "description": {{ (line ~ "\\nCUCM call id: " ~ cdr.globalCallID_callId
                   ~ " (cluster " ~ cdr.globalCallId_ClusterID ~ ")\\nEvent: " ~ event_id
                  )|tojson }},
 "category": "inquiry",
 "impact": "3",
 "urgency": "3"}
"""
)


@dataclass(frozen=True, slots=True)
class PresetAuth:
    type: str  # none, basic, bearer, oauth2 (the webhook's `auth.type`)
    fill: tuple[str, ...] = ()  # the `auth` members the operator must fill


@dataclass(frozen=True, slots=True)
class Preset:
    key: str
    name: str
    description: str
    url: str  # the destination, or its shape with the parts to replace in capitals
    method: str
    content_type: str
    body_template: str
    auth: PresetAuth
    headers: tuple[tuple[str, str], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["headers"] = [{"name": name, "value": value} for name, value in self.headers]
        data["auth"] = {"type": self.auth.type, "fill": list(self.auth.fill)}
        return data


PRESETS: dict[str, Preset] = {
    preset.key: preset
    for preset in (
        Preset(
            key="webex",
            name="Webex space",
            description="Webex Messages API: posts a markdown message into a space (room). "
            "Set meta.roomId to the space's id and the token of a bot that is a member of it.",
            url="https://webexapis.com/v1/messages",
            method="POST",
            content_type="application/json",
            body_template=WEBEX,
            auth=PresetAuth("bearer", ("token",)),
            meta={"roomId": "ROOM_ID"},
        ),
        Preset(
            key="teams",
            name="Microsoft Teams channel",
            description="A Teams Workflows webhook (the 'Post to a channel when a webhook "
            "request is received' flow): an Adaptive Card message. Paste the flow's URL.",
            url="https://WORKFLOW_URL",
            method="POST",
            content_type="application/json",
            body_template=TEAMS,
            auth=PresetAuth("none"),
        ),
        Preset(
            key="slack",
            name="Slack channel",
            description="A Slack incoming webhook: text with a mrkdwn section block. Paste "
            "the webhook's URL (https://hooks.slack.com/services/…).",
            url="https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            method="POST",
            content_type="application/json",
            body_template=SLACK,
            auth=PresetAuth("none"),
        ),
        Preset(
            key="servicenow",
            name="ServiceNow incident",
            description="ServiceNow Table API: creates an incident. Replace INSTANCE and "
            "give the user name and password of an integration user allowed to create them.",
            url="https://INSTANCE.service-now.com/api/now/table/incident",
            method="POST",
            content_type="application/json",
            body_template=SERVICENOW,
            auth=PresetAuth("basic", ("username", "password")),
            headers=(("Accept", "application/json"),),
        ),
        Preset(
            key="json",
            name="Generic JSON",
            description="The standard body ({cdr, meta, name}, or the call payload in call "
            "scope), signed when a secret is set: for receivers written for it.",
            url="https://RECEIVER/path",
            method="POST",
            content_type="application/json",
            body_template="",
            auth=PresetAuth("none"),
        ),
    )
}
