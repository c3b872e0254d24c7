from django.apps import AppConfig


class CdrConfig(AppConfig):
    name = "cdr"
    verbose_name = "CDR / CMR records"

    def ready(self) -> None:
        from calltelemetry.metrics import app_metrics_register
        from cdr.metrics import ingest_metrics

        app_metrics_register(ingest_metrics)
