"""The e-mail that tells operators a webhook was paused (H-state).

Sent once per pause, by the transaction that paused the webhook, after it commits. Its
recipients are ALERT_EMAILS, or every active staff user with an e-mail address; the mail
backend is EMAIL_URL's (the console when it is empty). A mail server that refuses is
logged: the pause itself stands, and the admin index shows it.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from webhooks.models import Delivery, Webhook

log = logging.getLogger(__name__)


def alert_recipients() -> list[str]:
    if settings.ALERT_EMAILS:
        return list(settings.ALERT_EMAILS)
    users = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def webhook_paused_alert(webhook_id: int) -> None:
    webhook = Webhook.objects.filter(pk=webhook_id).first()
    if webhook is None or webhook.paused_at is None:
        return  # deleted or resumed before this ran: nothing to tell
    recipients = alert_recipients()
    if not recipients:
        log.warning("webhook %s paused; no alert recipient (ALERT_EMAILS)", webhook.name)
        return
    held = webhook.deliveries.filter(status=Delivery.Status.HELD).count()
    body = (
        f"The webhook {webhook.name!r} was paused at {webhook.paused_at:%Y-%m-%d %H:%M:%S} UTC.\n\n"
        f"Why: {webhook.paused_reason}\n"
        f"Failed attempts in a row: {webhook.consecutive_failures}\n"
        f"Deliveries held (not lost, not sent): {held}\n\n"
        "Fix the receiver, then resume the webhook (admin: the webhook's page, "
        f'"Resume"; API: POST /api/v1/webhooks/{webhook.pk}/resume/): the held deliveries '
        "are then sent in order.\n"
    )
    try:
        send_mail(
            f"[Call Telemetry] webhook {webhook.name} paused",
            body,
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except Exception as exc:  # the pause stands; the admin index shows it
        log.warning("could not send the pause alert for webhook %s: %s", webhook.name, exc)
