"""Property-based API test: schemathesis generates requests for every operation of the
OpenAPI schema and runs them in-process against the WSGI application, with a staff user's
token; no response may be a 5xx or disagree with the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from calltelemetry.wsgi import application
from cdr.models import Cdr, CdrFile
from cdr.services import cdr_file_ingest
from tests.test_webhooks import make_webhook
from webhooks.models import Delivery

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# The brief: no server error, and every response conforms to the schema (status code
# documented, content type and headers as documented, body valid against its schema). The
# other built-in checks (positive_data_acceptance, negative_data_rejection, use_after_free,
# ...) judge business rules the schema cannot express — e.g. a schema-valid webhook URL that
# the destination policy refuses is a correct 400 — so they are not run here.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Per operation and mode; the API has grown to 30-odd operations, and CI runs it twice.
MAX_EXAMPLES = 12


@pytest.fixture
def seeded(premium: str, samples: Path, settings: Any) -> dict[str, Any]:
    # Test sends and redeliveries run synchronously in the request: crm.example.com does not
    # resolve here and the default destination policy refuses loopback, so a send records an
    # error quickly; the lowered timeout is a bound in case a fuzzed URL does resolve.
    settings.WEBHOOK_TIMEOUT = 1.0
    cdr_file_ingest(
        path=samples / "cucm12-panos1962/cdr_StandAloneCluster_02_202012260557_476630",
        source="replay",
        evaluate_webhooks=False,
    )
    webhook = make_webhook("https://crm.example.com/hook")
    user = User.objects.create_user("fuzzer", is_staff=True)
    token = Token.objects.create(user=user)
    return {
        "headers": {"Authorization": f"Token {token.key}"},
        "ids": {
            "webhook": webhook.pk,
            "cdr": Cdr.objects.values_list("pk", flat=True).first(),
            "cdr-file": CdrFile.objects.values_list("pk", flat=True).first(),
        },
    }


@pytest.fixture
def in_process() -> Iterator[None]:
    """Keep the WSGI handler from closing this test's connection after each request, as
    Django's test client does: the calls run in this thread, on this test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Requests that violate the schema must never cause a server error or an undocumented status.
# Their bodies are not checked: a path id that is not an integer does not match the URL
# pattern at all and gets Django's HTML 404 page, and a body that is not JSON gets DRF's
# `{"detail": "JSON parse error …"}`; neither is an answer of the operation the schema
# describes.
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance]


def fuzz(operation: Any, headers: dict[str, str], **strategy: Any) -> None:
    negative = strategy.get("generation_mode") == GenerationMode.NEGATIVE
    checks = NEGATIVE_CHECKS if negative else CHECKS

    @given(case=operation.as_strategy(**strategy))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # A savepoint per request: a database error is then reported against the request
        # that caused it, instead of aborting the test's transaction for all that follow.
        with transaction.atomic():
            case.call_and_validate(headers=headers, checks=checks)

    run()


def test_every_operation_survives_generated_requests(
    seeded: dict[str, Any], in_process: None
) -> None:
    headers = seeded["headers"]
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []

    def check(operation: Any, **strategy: Any) -> None:
        try:
            fuzz(operation, headers, **strategy)
        except BaseExceptionGroup as exc:  # schemathesis failures: collect, report them all
            failures.append(f"{operation.label} {strategy}:\n{exc}")
        except Unsatisfiable:
            # Not a bug: an operation without parameters or body (GET /license/) has nothing
            # a negative case could violate.
            assert strategy.get("generation_mode") == GenerationMode.NEGATIVE, operation.label

    for operation in operations:
        # Schema-valid requests, then schema-violating ones (which must be refused with a
        # documented 4xx, never a 500).
        check(operation)
        check(operation, generation_mode=GenerationMode.NEGATIVE)
        # Generated integer ids almost never name an existing row; run the operations on
        # existing objects again with the seeded ids so their success paths are fuzzed too.
        path = operation.path
        for prefix in ("/api/v1/webhooks/{id}/", "/api/v1/cdrs/{id}/", "/api/v1/cdr-files/{id}/"):
            kind = prefix.split("/")[3].rstrip("s")
            if path.startswith(prefix) and operation.method.upper() != "DELETE":
                check(operation, path_parameters={"id": seeded["ids"][kind]})
        if path.startswith("/api/v1/deliveries/{id}/"):
            delivery = Delivery.objects.values_list("pk", flat=True).first()
            if delivery is not None:
                check(operation, path_parameters={"id": delivery})
    assert not failures, "\n\n".join(failures)
