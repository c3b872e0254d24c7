from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command

from cdr.dropfolder import Folders, Scanner, file_claim, files_requeue_stale, queued_file_ingest
from cdr.models import Cdr, CdrFile
from tests.conftest import ROOT, broker_unreachable

SAMPLE = "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630"


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def drop(samples: Path, incoming: Path, relative: str = SAMPLE) -> Path:
    target = incoming / Path(relative).name
    shutil.copy(samples / relative, target)
    return target


@pytest.mark.slow
def test_a_dropped_file_is_ingested_by_a_worker_and_moved_to_processed(
    samples: Path, process_env: dict[str, str], start_worker: Callable, settings: object
) -> None:
    settings.CDR_SETTLE_SECONDS = 0.01  # type: ignore[attr-defined]
    start_worker()
    incoming = Path(process_env["CDR_INCOMING_DIR"])
    drop(samples, incoming)
    (incoming / "_cdr_StandAloneCluster_02_202012260558_476631").write_text("still writing")
    time.sleep(0.05)
    call_command("watch_cdr", "--once")
    cdr_file = CdrFile.objects.get()
    wait_for(lambda: CdrFile.objects.get().status == CdrFile.Status.DONE)
    assert Cdr.objects.count() == 6
    assert (incoming / "processed" / Path(SAMPLE).name).is_file()
    assert (incoming / "_cdr_StandAloneCluster_02_202012260558_476631").is_file()
    assert CdrFile.objects.get(pk=cdr_file.pk).source == "watcher"


@pytest.mark.django_db
def test_a_file_still_growing_is_not_claimed(tmp_path: Path, settings: object) -> None:
    settings.CDR_INCOMING_DIR = tmp_path  # type: ignore[attr-defined]
    settings.CDR_SETTLE_SECONDS = 0.01  # type: ignore[attr-defined]
    scanner = Scanner(Folders.current())
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_text("a")
    time.sleep(0.05)
    assert scanner.complete() == []  # first sighting
    path.write_text("ab")
    time.sleep(0.05)
    assert scanner.complete() == []  # changed since
    time.sleep(0.05)
    assert scanner.complete() == [path]


@pytest.mark.django_db
def test_a_file_that_disappears_before_the_claim_is_skipped(
    tmp_path: Path, settings: object
) -> None:
    settings.CDR_INCOMING_DIR = tmp_path  # type: ignore[attr-defined]
    assert file_claim(tmp_path / "cdr_gone_01_202001010000_1") is None
    assert CdrFile.objects.count() == 0


@pytest.mark.django_db
def test_a_broken_file_goes_to_failed_with_an_error_note(tmp_path: Path, settings: object) -> None:
    settings.CDR_INCOMING_DIR = tmp_path  # type: ignore[attr-defined]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(b"\x00\x01binary")
    cdr_file = file_claim(path)
    assert cdr_file is not None and not path.exists()
    result = queued_file_ingest(file_id=cdr_file.pk)
    assert result.status == CdrFile.Status.FAILED
    note = tmp_path / "failed" / "cdr_C_01_202001010000_1.error"
    assert "binary data" in note.read_text()
    assert (tmp_path / "failed" / "cdr_C_01_202001010000_1").read_bytes() == b"\x00\x01binary"


@pytest.mark.django_db
def test_a_claimed_record_is_ingested_once(samples: Path, tmp_path: Path, settings: object) -> None:
    settings.CDR_INCOMING_DIR = tmp_path  # type: ignore[attr-defined]
    cdr_file = file_claim(drop(samples, tmp_path))
    assert queued_file_ingest(file_id=cdr_file.pk).stored_count == 6
    assert queued_file_ingest(file_id=cdr_file.pk) is None  # already done: nothing to claim


@pytest.mark.slow
def test_queued_while_the_broker_is_down_is_ingested_after_the_sweep(
    samples: Path, process_env: dict[str, str], start_worker: Callable, settings: object
) -> None:
    settings.CDR_INCOMING_DIR = Path(process_env["CDR_INCOMING_DIR"])  # type: ignore[attr-defined]
    with broker_unreachable():
        cdr_file = file_claim(drop(samples, settings.CDR_INCOMING_DIR))  # type: ignore[attr-defined]
    assert CdrFile.objects.get(pk=cdr_file.pk).status == CdrFile.Status.QUEUED
    start_worker()
    CdrFile.objects.filter(pk=cdr_file.pk).update(created_at=cdr_file.created_at.replace(year=2000))
    assert files_requeue_stale() == 1
    wait_for(lambda: CdrFile.objects.get(pk=cdr_file.pk).status == CdrFile.Status.DONE)


@pytest.mark.slow
def test_two_watchers_racing_on_one_folder_claim_each_file_once(
    tmp_path: Path, process_env: dict[str, str]
) -> None:
    from cdr.generator import generate

    incoming = Path(process_env["CDR_INCOMING_DIR"])
    generate(tmp_path / "gen", records=200, records_per_file=5, seed=3)
    files = sorted((tmp_path / "gen").iterdir())
    for path in files:
        shutil.move(path, incoming / path.name)
    env = {
        **process_env,
        "CDR_SETTLE_SECONDS": "0.01",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    watchers = [
        subprocess.Popen([sys.executable, "manage.py", "watch_cdr", "--once"], cwd=ROOT, env=env)
        for _ in range(2)
    ]
    for watcher in watchers:
        assert watcher.wait(60) == 0
    assert sorted(CdrFile.objects.values_list("name", flat=True)) == [p.name for p in files]
    assert len(list((incoming / ".queue").iterdir())) == len(files)


# --- Links: another file's content under a drop-folder name -----------------------------------


def _claim_all(incoming: Path) -> list[CdrFile]:
    scanner = Scanner(Folders.current())
    scanner.complete()
    claimed = [file_claim(path) for path in scanner.complete()]
    return [c for c in claimed if c is not None]


@pytest.mark.django_db
def test_a_hard_linked_file_is_refused_unread_and_moved_to_failed(
    tmp_path: Path, settings: object
) -> None:
    incoming = tmp_path / "incoming"
    settings.CDR_INCOMING_DIR = incoming  # type: ignore[attr-defined]
    settings.CDR_SETTLE_SECONDS = 0.01  # type: ignore[attr-defined]
    Folders.current()
    # Stands for /etc/shadow: a file outside the drop folder whose content must stay unread.
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    (incoming / "cdr_C_01_202001010000_1").hardlink_to(secret)
    time.sleep(0.05)
    (cdr_file,) = _claim_all(incoming)
    result = queued_file_ingest(file_id=cdr_file.pk)
    assert result is not None and result.status == CdrFile.Status.FAILED
    assert "hard link (2 names" in result.error and "secret" not in result.error
    assert result.sha256 == "" and result.size == 0  # never opened
    note = (incoming / "failed" / "cdr_C_01_202001010000_1.error").read_text()
    assert "refused without reading it" in note and "secret" not in note
    assert Cdr.objects.count() == 0
    assert secret.read_text().startswith("root:")


@pytest.mark.django_db
def test_a_symlinked_file_is_refused_unread_and_moved_to_failed(
    samples: Path, tmp_path: Path, settings: object
) -> None:
    incoming = tmp_path / "incoming"
    settings.CDR_INCOMING_DIR = incoming  # type: ignore[attr-defined]
    settings.CDR_SETTLE_SECONDS = 0.01  # type: ignore[attr-defined]
    Folders.current()
    # A real CDR file behind the link: refusing it is about the link, not the content.
    (incoming / Path(SAMPLE).name).symlink_to(samples / SAMPLE)
    time.sleep(0.05)
    (cdr_file,) = _claim_all(incoming)
    result = queued_file_ingest(file_id=cdr_file.pk)
    assert result is not None and result.status == CdrFile.Status.FAILED
    assert "symbolic link" in result.error
    assert (incoming / "failed" / Path(SAMPLE).name).is_symlink()
    assert Cdr.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("content", [b"binary\x00", None], ids=["failed", "processed"])
def test_a_name_as_long_as_the_folder_holds_is_claimed_and_retired(
    samples: Path, tmp_path: Path, settings: object, content: bytes | None
) -> None:
    settings.CDR_INCOMING_DIR = tmp_path  # type: ignore[attr-defined]
    name = "cdr_" + "é" * 116 + "x_01_202001010000_1"  # 255 bytes, the most a name holds
    assert len(name.encode()) == 255
    path = tmp_path / name
    if content is None:
        shutil.copy(samples / SAMPLE, path)
    else:
        path.write_bytes(content)
    cdr_file = file_claim(path)
    assert cdr_file is not None and cdr_file.name == name
    result = queued_file_ingest(file_id=cdr_file.pk)
    folder = tmp_path / ("failed" if content else "processed")
    kept = [p for p in folder.iterdir() if not p.name.endswith(".error")]
    assert len(kept) == 1 and kept[0].name.startswith("cdr_éé") and "…" in kept[0].name
    if content:
        assert result.status == CdrFile.Status.FAILED
        assert (folder / (kept[0].name + ".error")).is_file()
    else:
        assert result.status == CdrFile.Status.DONE and result.stored_count == 6
