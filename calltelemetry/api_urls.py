from django.urls import path
from rest_framework.routers import DefaultRouter

from cdr.views import CdrFileViewSet, CdrViewSet, CmrViewSet
from licensing.views import LicenseView
from sftp.views import CdrSourceViewSet
from webhooks.views import CdrFieldViewSet, DeliveryViewSet, WebhookViewSet

router = DefaultRouter()
router.register("cdr-files", CdrFileViewSet, basename="cdr-file")
router.register("cdrs", CdrViewSet, basename="cdr")
router.register("cmrs", CmrViewSet, basename="cmr")
router.register("cdr-fields", CdrFieldViewSet, basename="cdr-field")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("cdr-sources", CdrSourceViewSet, basename="cdr-source")

urlpatterns = [
    path("license/", LicenseView.as_view(), name="license"),
    *router.urls,
]
