from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # The lower layers publish what they need from webhooks; they never import it.
        from cdr.contracts import batch_listener_register
        from webhooks.trigger import WebhookTrigger

        batch_listener_register(WebhookTrigger)
