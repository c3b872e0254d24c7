import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "calltelemetry.settings")

app = Celery("calltelemetry")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
