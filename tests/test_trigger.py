"""The trigger against concurrent webhook deletion (PostgreSQL: real concurrent writers).

Deliveries reference webhooks without a database constraint; the trigger's row locks and
the locking delete must keep them consistent either way round.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from cdr.services import cdr_file_ingest
from tests.test_parsing import cdr_row, cdr_text
from webhooks import trigger
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.usefixtures("premium")


@pytest.fixture
def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL; SQLite serialises them")


def stored_cdr_id(tmp_path: Path) -> int:
    from cdr.models import Cdr

    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"p1"')]))
    cdr_file_ingest(path=path, source="replay", evaluate_webhooks=False)
    return Cdr.objects.get().pk


@contextmanager
def deleted_while_locked(webhook: Webhook) -> Iterator[None]:
    """Another connection locks the webhook's row, lets the block start, and deletes the
    webhook 0.3 s later; the block's own lock on that row waits for the delete."""
    holding, release = threading.Event(), threading.Event()

    def delete_slowly() -> None:
        try:
            with transaction.atomic():
                list(Webhook.objects.select_for_update().filter(pk=webhook.pk).values_list("pk"))
                holding.set()
                release.wait(5)
                Webhook.objects.filter(pk=webhook.pk).delete()
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_slowly)
    deleter.start()
    holding.wait(5)
    threading.Timer(0.3, release.set).start()
    try:
        yield
    finally:
        deleter.join(10)


@pytest.mark.django_db
def test_a_webhook_created_mid_file_fires_for_every_batch_stored_after_it(
    tmp_path: Path, settings: object
) -> None:
    """Batches are matched ahead on the read-ahead thread against the webhooks known then;
    a batch whose webhooks changed meanwhile is matched again when it is stored."""
    settings.CDR_BATCH_SIZE = 1  # type: ignore[attr-defined]
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(4)]))
    committed: list[int] = []

    def create_webhook_after_the_first_batch(count: int) -> None:
        committed.append(count)
        if len(committed) == 1:  # batch 2 is most likely matched ahead already
            Webhook.objects.create(name="late", url="http://192.0.2.1/hook")

    cdr_file_ingest(path=path, source="replay", progress=create_webhook_after_the_first_batch)
    fired = sorted(Delivery.objects.values_list("cdr__pkid", flat=True))
    assert fired == ["p1", "p2", "p3"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres_only")
def test_a_webhook_deleted_while_a_batch_fires_it_takes_the_new_deliveries_along(
    tmp_path: Path,
) -> None:
    """Production's path: the ingest statement's tail locks the webhook's row until the
    batch commits, so a delete started meanwhile waits, then takes the new deliveries."""
    webhook = Webhook.objects.create(name="w", url="http://192.0.2.1/hook")
    locked, deleted = threading.Event(), threading.Event()
    held_back: list[bool] = []

    class Pausing(trigger.WebhookTrigger):
        """The production listener, pausing once the tail has locked the webhook's row."""

        def statement(self, layout, rows, prepared):  # type: ignore[no-untyped-def]
            tail = super().statement(layout, rows, prepared)
            locked.set()
            held_back.append(not deleted.wait(0.5))
            return tail

    def delete() -> None:
        try:
            locked.wait(5)
            Webhook.objects.filter(pk=webhook.pk).delete()  # waits for the batch's commit
            deleted.set()
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete)
    deleter.start()
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"p1"')]))
    record = cdr_file_ingest(path=path, source="replay", on_stored=Pausing())
    deleter.join(10)
    assert record.stored_count == 1 and held_back == [True] and deleted.is_set()
    assert not Webhook.objects.exists()
    assert not Delivery.objects.exists()  # no delivery left pointing at nothing


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres_only")
def test_an_ingest_batch_skips_a_webhook_deleted_before_its_deliveries_are_made(
    tmp_path: Path,
) -> None:
    """On PostgreSQL the deliveries are created in the statement that stores the batch; the
    matched webhooks are locked first, and one deleted meanwhile gets nothing."""
    gone = Webhook.objects.create(name="gone", url="http://192.0.2.1/a")
    kept = Webhook.objects.create(name="kept", url="http://192.0.2.1/b")
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid='"p1"'), cdr_row(pkid='"p2"')]))
    with deleted_while_locked(gone):
        record = cdr_file_ingest(path=path, source="replay")
    assert record.stored_count == 2
    assert sorted(Delivery.objects.values_list("webhook__name", "cdr__pkid")) == [
        ("kept", "p1"),
        ("kept", "p2"),
    ]
    kept.refresh_from_db()
    assert kept.hit_count == 2 and kept.last_hit_at is not None


@pytest.mark.django_db
def test_ingest_event_ids_are_unique_by_construction(tmp_path: Path, settings: object) -> None:
    """msg_ + 32 hex digits; on PostgreSQL the first 16 are the delivery's own id."""
    settings.CDR_BATCH_SIZE = 2  # type: ignore[attr-defined]
    for name in ("a", "b"):
        Webhook.objects.create(name=name, url="http://192.0.2.1/hook")
    path = tmp_path / "cdr_C_01_202001010000_1"
    path.write_bytes(cdr_text([cdr_row(pkid=f'"p{i}"') for i in range(5)]))
    cdr_file_ingest(path=path, source="replay")
    pairs = list(Delivery.objects.values_list("id", "event_id"))
    assert len(pairs) == 10
    assert len({event_id for _, event_id in pairs}) == 10
    for pk, event_id in pairs:
        assert len(event_id) == 36 and event_id.startswith("msg_")
        int(event_id[4:], 16)
        if connection.vendor == "postgresql":
            assert event_id[4:20] == f"{pk:016x}"


@pytest.mark.django_db
def test_a_record_has_one_event_delivery_per_webhook_but_any_number_of_test_sends(
    tmp_path: Path,
) -> None:
    from django.db import IntegrityError

    from webhooks.delivery import new_event_id

    cdr_id = stored_cdr_id(tmp_path)
    webhook = Webhook.objects.create(name="w", url="http://192.0.2.1/hook")

    def delivery(kind: str) -> Delivery:
        return Delivery.objects.create(
            webhook=webhook, cdr_id=cdr_id, kind=kind, event_id=new_event_id()
        )

    delivery(Delivery.Kind.TEST)
    delivery(Delivery.Kind.TEST)
    delivery(Delivery.Kind.EVENT)
    with pytest.raises(IntegrityError), transaction.atomic():
        delivery(Delivery.Kind.EVENT)
    assert Delivery.objects.filter(webhook=webhook, cdr_id=cdr_id).count() == 3
