from django.urls import path
from rest_framework.routers import DefaultRouter

from cdr.views import CdrFileViewSet, CdrViewSet, CmrViewSet
from licensing.views import LicenseView
from sftp.views import CdrSourceViewSet

router = DefaultRouter()
router.register("cdr-files", CdrFileViewSet, basename="cdr-file")
router.register("cdrs", CdrViewSet, basename="cdr")
router.register("cmrs", CmrViewSet, basename="cmr")
router.register("cdr-sources", CdrSourceViewSet, basename="cdr-source")

urlpatterns = [
    path("license/", LicenseView.as_view(), name="license"),
    *router.urls,
]
