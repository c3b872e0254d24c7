"""The API's routes: part of the project's composition root.

Dependency direction (STYLE.md): `calltelemetry` is the project shell, below every app, and
imports none of them, with one exception, the composition root, which wires the apps
together and which no app imports: this module and `retention` (with `tasks`, which only
runs it). Everything else here (settings, config, API schema helpers, health, metrics,
logs, permissions) stays app-free; where it needs an app's data, the app registers it from
its `AppConfig.ready()` (see `metrics.app_metrics_register`). tests/test_dependencies.py
checks the rule by parsing every import.
"""

from django.urls import path
from rest_framework.routers import DefaultRouter

from cdr.views import CallViewSet, CdrFileViewSet, CdrViewSet, CmrViewSet
from licensing.views import LicenseView
from sftp.views import CdrSourceViewSet
from webhooks.views import CdrFieldViewSet, DeliveryViewSet, WebhookPresetViewSet, WebhookViewSet

router = DefaultRouter()
router.register("cdr-files", CdrFileViewSet, basename="cdr-file")
router.register("cdrs", CdrViewSet, basename="cdr")
router.register("cmrs", CmrViewSet, basename="cmr")
router.register("calls", CallViewSet, basename="call")
router.register("cdr-fields", CdrFieldViewSet, basename="cdr-field")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("webhook-presets", WebhookPresetViewSet, basename="webhook-preset")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("cdr-sources", CdrSourceViewSet, basename="cdr-source")

urlpatterns = [
    path("license/", LicenseView.as_view(), name="license"),
    *router.urls,
]
