from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from cdr.models import Cdr, CdrFile
from tests.test_webhooks import make_webhook, reference_row, write_cdr_file
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.django_db


def replay(*args: str) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("replay_cdr", *args, stdout=out)
    except SystemExit as exc:
        return out.getvalue(), int(exc.code)
    return out.getvalue(), 0


def test_replay_a_folder_of_every_generation(samples: Path) -> None:
    output, code = replay(str(samples))
    assert code == 0
    assert "Files: 10 (10 done). Records: 41 stored, 0 duplicate, 0 rejected" in output
    assert CdrFile.objects.filter(source="replay").count() == 10


def test_replay_reports_rejected_rows_and_exits_1_when_a_file_failed(tmp_path: Path) -> None:
    good = write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()])
    good.write_text(good.read_text() + '1,2,"short row"\n')
    (tmp_path / "cdr_C_01_202311061458_2").write_bytes(b"\x00\x00junk")
    output, code = replay(str(tmp_path))
    assert code == 1
    assert "line 4: 3 fields, expected 129" in output
    assert "failed, 0 stored, 0 duplicate, 0 rejected (binary data" in output
    assert "Files: 2 (1 done, 1 failed). Records: 1 stored, 0 duplicate, 1 rejected" in output


def test_dry_run_stores_and_sends_nothing_and_counts_matches(tmp_path: Path, premium: str) -> None:
    make_webhook("http://crm.example.com/hook", [("dateTimeConnect", "eq", "Never")], name="Missed")
    make_webhook("http://crm.example.com/hook", [("duration", "gt", 300)], name="Long")
    path = write_cdr_file(
        tmp_path / "cdr_C_01_202311061457_1",
        [reference_row(), {**reference_row(), "pkid": "second"}],
    )
    output, code = replay("--dry-run", str(path))
    assert code == 0
    assert "2 records, 2 new" in output
    assert "Missed: would fire for 2 records" in output
    assert "Long" not in output
    assert Cdr.objects.count() == 0 and Delivery.objects.count() == 0
    assert Webhook.objects.get(name="Missed").hit_count == 0


def test_dry_run_does_not_count_records_already_stored(tmp_path: Path, premium: str) -> None:
    make_webhook("http://crm.example.com/hook", name="Every")
    path = write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()])
    replay("--no-webhooks", str(path))
    output, _ = replay("--dry-run", str(path))
    assert "1 records, 0 new" in output and "No webhook would fire." in output


def test_no_webhooks_stores_without_evaluating(tmp_path: Path, premium: str) -> None:
    make_webhook("http://crm.example.com/hook")
    replay(
        "--no-webhooks",
        str(write_cdr_file(tmp_path / "cdr_C_01_202311061457_1", [reference_row()])),
    )
    assert Cdr.objects.count() == 1 and Delivery.objects.count() == 0


def test_a_missing_path_is_a_clear_error() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such file or directory"):
        call_command("replay_cdr", "/nonexistent/cdr_x")


def test_dry_run_of_a_truncated_gzip_counts_the_rows_before_the_cut(
    tmp_path: Path, premium: str
) -> None:
    import gzip

    make_webhook("http://crm.example.com/hook", name="Every")
    rows = [{**reference_row(), "pkid": f"pkid-{i}"} for i in range(300)]
    plain = write_cdr_file(tmp_path / "plain", rows)
    packed = gzip.compress(plain.read_bytes())
    path = tmp_path / "cdr_C_01_202311061457_1.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])  # cut short
    output, code = replay("--dry-run", str(path))
    assert code == 1
    assert "would fail: corrupt or truncated gzip file" in output
    counted = int(output.split(" records, ")[0].rsplit(" ", 1)[1])
    assert 0 < counted < 300
    assert f"Every: would fire for {counted} records" in output
    assert Cdr.objects.count() == 0


def test_dry_run_decides_what_is_new_with_the_ingests_key(tmp_path: Path, premium: str) -> None:
    """Empty cluster column: the key falls back to the file name's cluster in both; a row
    without a pkid is rejected by both."""
    make_webhook("http://crm.example.com/hook", name="Every")
    rows = [{**reference_row(), "globalCallId_ClusterID": "", "pkid": f"p{i}"} for i in range(3)]
    rows.append({**reference_row(), "pkid": ""})
    path = write_cdr_file(tmp_path / "cdr_HQ_01_202311061457_1", rows)

    before, _ = replay("--dry-run", str(path))
    assert "4 records" not in before and "3 records, 3 new, 1 rejected" in before
    replay(str(path))
    assert set(Cdr.objects.values_list("cluster", flat=True)) == {"HQ"}
    after, _ = replay("--dry-run", str(path))
    assert "3 records, 0 new, 1 rejected" in after
    assert "No webhook would fire." in after
