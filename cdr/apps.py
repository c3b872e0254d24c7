from django.apps import AppConfig


class CdrConfig(AppConfig):
    name = "cdr"
    verbose_name = "CDR / CMR records"

    def ready(self) -> None:
        from calltelemetry.health import health_warnings_register
        from calltelemetry.metrics import app_metrics_register
        from cdr.metrics import ingest_metrics
        from cdr.zero_duration import zero_duration_warnings

        app_metrics_register(ingest_metrics)
        health_warnings_register(zero_duration_warnings)
