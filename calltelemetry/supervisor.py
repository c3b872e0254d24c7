"""`make run`: prepare the embedded appliance and run all of its processes.

Migrates, creates the first admin user, then starts the web server, a Celery worker, Celery
beat, the drop-folder watcher and the SFTP receiver. Ctrl-C (or SIGTERM) stops every process
it started; if one of them dies, the others are stopped too, so the appliance never runs
half-alive.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import django


def ensure_admin() -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
    password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    if generated:
        print(f"\n  Admin user created: {username} / {password}  (shown once)\n", flush=True)
    else:
        print(f"\n  Admin user created: {username}\n", flush=True)


def commands(port: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "web": [
            py,
            "-m",
            "gunicorn",
            "calltelemetry.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--access-logfile",
            "-",
        ],
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "calltelemetry",
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            "celery,ingest,webhooks",
            "--concurrency",
            "2",
        ],
        "beat": [py, "-m", "celery", "-A", "calltelemetry", "beat", "--loglevel", "INFO"],
        "watcher": [py, "manage.py", "watch_cdr"],
        "sftp": [py, "manage.py", "run_sftp"],
    }


def stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 15
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "calltelemetry.settings")
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    ensure_admin()
    settings.CDR_INCOMING_DIR.mkdir(parents=True, exist_ok=True)

    procs = {name: subprocess.Popen(cmd) for name, cmd in commands(settings.PORT).items()}
    print(
        f"\n  Call Telemetry is running: http://127.0.0.1:{settings.PORT}/admin/"
        f"\n  Drop CDR/CMR files into {settings.CDR_INCOMING_DIR}, or send them over SFTP"
        f" to port {settings.SFTP_PORT} as a CDR source (admin → CDR sources)"
        "\n  Press Ctrl-C to stop.\n",
        flush=True,
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while not stopping:
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            print(f"  {', '.join(dead)} stopped unexpectedly; stopping the appliance.", flush=True)
            code = 1
            break
        time.sleep(0.5)
    stop(procs)
    return code


if __name__ == "__main__":
    sys.exit(main())
