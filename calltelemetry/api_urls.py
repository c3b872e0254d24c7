from django.urls import path
from rest_framework.routers import DefaultRouter

from licensing.views import LicenseView

router = DefaultRouter()

urlpatterns = [
    path("license/", LicenseView.as_view(), name="license"),
    *router.urls,
]
