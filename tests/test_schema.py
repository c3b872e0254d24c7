from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient


@pytest.fixture
def staff_api(db: None) -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_user("operator", is_staff=True))
    return client


@pytest.fixture
def schema(staff_api: APIClient) -> dict:
    response = staff_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3(schema: dict) -> None:
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # raises on any violation of the OpenAPI 3 JSON schema


def test_every_api_endpoint_is_described(schema: dict) -> None:
    for path in (
        "/api/v1/webhooks/",
        "/api/v1/webhooks/{id}/",
        "/api/v1/webhooks/{id}/test/",
        "/api/v1/webhooks/{id}/dry-run/",
        "/api/v1/webhooks/{id}/deliveries/",
        "/api/v1/deliveries/",
        "/api/v1/deliveries/{id}/",
        "/api/v1/deliveries/{id}/redeliver/",
        "/api/v1/deliveries/redeliver/",
        "/api/v1/cdr-fields/",
        "/api/v1/cdrs/",
        "/api/v1/calls/",
        "/api/v1/calls/{id}/",
        "/api/v1/license/",
    ):
        assert path in schema["paths"], path


def resolve(schema: dict, ref: dict) -> dict:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def test_the_webhook_request_body_has_nested_conditions_and_headers(schema: dict) -> None:
    create = schema["paths"]["/api/v1/webhooks/"]["post"]
    assert list(create["requestBody"]["content"]) == ["application/json"]
    write = resolve(schema, create["requestBody"]["content"]["application/json"]["schema"])
    assert set(write["required"]) == {"name", "url"}
    condition = resolve(schema, write["properties"]["conditions"]["items"])
    assert set(condition["properties"]) == {"field", "operator", "value"}
    operator = resolve(schema, condition["properties"]["operator"])
    assert "is_not_empty" in operator["enum"] and "regex" in operator["enum"]
    header = resolve(schema, write["properties"]["headers"]["items"])
    assert "••••••" in header["properties"]["value"]["description"]
    assert write["properties"]["secret"]["writeOnly"] is True


def test_responses_describe_masking_errors_and_the_license(schema: dict) -> None:
    create = schema["paths"]["/api/v1/webhooks/"]["post"]["responses"]
    saved = resolve(schema, create["201"]["content"]["application/json"]["schema"])
    assert saved["properties"]["has_secret"]["type"] == "boolean"
    assert saved["properties"]["secret"]["nullable"] is True
    errors = resolve(schema, create["400"]["content"]["application/json"]["schema"])
    assert {"conditions", "headers", "url", "secret"} <= set(errors["properties"])
    forbidden = resolve(schema, create["403"]["content"]["application/json"]["schema"])
    assert set(forbidden["properties"]) == {"detail", "code", "license_state"}
    assert "401" in create
    test = schema["paths"]["/api/v1/webhooks/{id}/test/"]["post"]["responses"]
    attempt = resolve(schema, test["200"]["content"]["application/json"]["schema"])
    assert {"status_code", "latency_ms", "error_class", "request_headers"} <= set(
        attempt["properties"]
    )


def test_the_docs_page_renders(db: None, client: Client) -> None:
    client.force_login(User.objects.create_user("viewer"))
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page and "/api/v1/schema/" in page
