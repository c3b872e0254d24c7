from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # The lower layers publish what they need from webhooks; they never import it.
        from calltelemetry.metrics import app_metrics_register
        from cdr.contracts import batch_listener_register, call_listener_register
        from webhooks.call_trigger import CALL_TRIGGER
        from webhooks.metrics import delivery_metrics
        from webhooks.trigger import WebhookTrigger

        batch_listener_register(WebhookTrigger)
        call_listener_register(CALL_TRIGGER)
        app_metrics_register(delivery_metrics)
