"""The OpenAPI document makes a usable typed client: openapi-python-client generates one without a single warning,
with one model per component (no explosion of inline classes), and that client round-trips against a real API
process and worker through its typed functions only.
"""

from __future__ import annotations

import base64
import importlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import orjson
import pytest

from api.app import app
from tests.conftest import make_partner
from tests.e2e.conftest import Process, api_process, worker_process

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "pfsync_generated_client"
MAX_MODEL_FILES = 60
# The generator knows no NDJSON: it is told to treat the NDJSON bodies as bytes, as the document's description says.
CONFIG = """\
post_hooks: []
content_type_overrides:
  application/x-ndjson: application/octet-stream
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The client generated from /openapi.json, and everything the generator printed."""
    root = tmp_path_factory.mktemp("openapi-client")
    document = root / "openapi.json"
    document.write_bytes(orjson.dumps(app.openapi()))
    config = root / "config.yaml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [
            str(GENERATOR), "generate", "--path", str(document), "--output-path", str(root / PACKAGE),
            "--meta", "none", "--config", str(config), "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return root, output


@pytest.fixture(scope="module")
def client_package(generated: tuple[Path, str]) -> Iterator[ModuleType]:
    root, _ = generated
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_results_are_declared_as_json_ndjson_and_csv() -> None:
    answer = app.openapi()["paths"]["/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]
    assert set(answer) == {"application/json", "application/x-ndjson", "text/csv"}
    assert answer["text/csv"]["schema"]["format"] == "binary"


def test_the_generator_prints_no_warning_about_the_document(generated: tuple[Path, str]) -> None:
    _, output = generated
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output


def test_the_client_has_one_model_per_component_each_with_every_field(
    generated: tuple[Path, str],
    client_package: ModuleType,  # noqa: ARG001 (the package must be importable)
) -> None:
    root, _ = generated
    model_files = sorted(p.name for p in (root / PACKAGE / "models").glob("*.py") if p.name != "__init__.py")
    assert len(model_files) <= MAX_MODEL_FILES, model_files
    models = _module("models")
    expected = {
        "Business": {"id", "object_", "external_id", "name", "metadata", "created_at", "updated_at"},
        "Customer": {
            "id", "object_", "business_id", "external_id", "email_address", "phone_number", "full_name",
            "metadata", "unsubscribed", "created_at", "updated_at",
        },
        "BusinessSync": {"id", "external_id", "name", "metadata"},
        "CustomerSync": {"id", "external_id", "email_address", "phone_number", "full_name", "metadata"},
        "BusinessPreview": {"id", "object_", "external_id", "name", "metadata", "created_at", "updated_at"},
        "CustomerPreview": {"id", "object_", "business_id", "external_id", "full_name", "created_at", "updated_at"},
        "Job": {"id", "type_", "business_id", "dry_run", "status", "counts", "created_at", "finished_at", "links"},
        "Result": {"index", "outcome", "id", "external_id", "changed_fields", "errors", "changes"},
        "Change": {"from_", "to"},
        "ResultList": {"data", "has_more", "next_cursor"},
        "Problem": {"type_", "title", "status", "detail", "code", "errors"},
    }  # fmt: skip
    for name, fields in expected.items():
        declared = {f.name for f in attrs.fields(getattr(models, name))}
        assert fields <= declared, (name, fields - declared)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API process and a worker (of this module only) on the session's queue."""
    log_dir = tmp_path_factory.mktemp("openapi-client-processes")
    worker: Process = worker_process(log_dir, "openapi-client-worker").start()
    process, url = api_process(log_dir, "openapi-client-api")
    try:
        yield url
    finally:
        process.stop()
        worker.stop()


def test_a_typed_round_trip_through_the_generated_client(client_package: ModuleType, api_url: str) -> None:
    models = _module("models")
    types = _module("types")
    sync_business = _module("api.sync.sync_business")
    sync_customers_batch = _module("api.batch_sync.sync_customers_batch")
    get_job = _module("api.jobs.get_job")
    job_results = _module("api.jobs.job_results")
    get_customer = _module("api.reads.get_customer")

    key = make_partner("openapi client")
    token = base64.b64encode(f"{key.key_id}:{key.secret}".encode()).decode()
    client = client_package.AuthenticatedClient(base_url=api_url, token=token, prefix="Basic")

    # One business: a typed model in, a typed model out.
    answer = sync_business.sync_detailed(
        client=client,
        body=models.BusinessSync(
            name="Typed Co", external_id="typed-1", metadata=models.Metadata.from_dict({"tier": "gold"})
        ),
        idempotency_key="typed-client-business",
    )
    assert answer.status_code == 200, answer.content
    business = answer.parsed
    assert isinstance(business, models.Business)
    assert (business.name, business.external_id, business.metadata.to_dict()) == (
        "Typed Co",
        "typed-1",
        {"tier": "gold"},
    )
    assert business.id.startswith("biz_")
    assert answer.headers["Sync-Outcome"] == "created"

    # A batch of customers (one of them bad), as JSON, then polled to the end.
    batch = models.CustomerBatch(
        customers=[
            models.CustomerSync(external_id="c-1", email_address="ada@example.com", full_name="Ada Lovelace"),
            models.CustomerSync(external_id="c-2", email_address="not an address"),
            models.CustomerSync(external_id="c-3", phone_number="+1 555 0100"),
        ]
    )
    accepted = sync_customers_batch.sync_detailed(business_id=business.id, client=client, body=batch)
    assert accepted.status_code == 202, accepted.content
    job = accepted.parsed
    assert isinstance(job, models.Job)
    assert accepted.headers["Location"] == f"/jobs/{job.id}"
    deadline = time.monotonic() + 60
    while job.status not in (models.JobStatus.COMPLETED, models.JobStatus.CANCELLED, models.JobStatus.FAILED):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
        job = get_job.sync(job_id=job.id, client=client)
        assert isinstance(job, models.Job)
    assert job.status == models.JobStatus.COMPLETED
    assert (job.counts.total, job.counts.processed, job.counts.created, job.counts.failed) == (3, 3, 2, 1)

    # The results, a page at a time: the cursor a page gives is the `starting_after` of the next.
    first = job_results.sync(job_id=job.id, client=client, limit=2)
    assert isinstance(first, models.ResultList)
    assert [r.index for r in first.data] == [0, 1]
    assert first.has_more is True
    assert isinstance(first.next_cursor, str)
    rest = job_results.sync(job_id=job.id, client=client, limit=2, starting_after=first.next_cursor)
    assert isinstance(rest, models.ResultList)
    assert [r.index for r in rest.data] == [2]
    assert rest.has_more is False
    assert rest.next_cursor is None
    results = [*first.data, *rest.data]
    assert [r.outcome for r in results] == [models.Outcome.CREATED, models.Outcome.FAILED] + [models.Outcome.CREATED]
    assert [e.code for e in results[1].errors] == ["invalid_email"]
    assert results[1].errors[0].path == "email_address"

    customer = get_customer.sync(customer_id=results[0].id, client=client)
    assert isinstance(customer, models.Customer)
    assert (customer.business_id, customer.email_address, customer.full_name) == (
        business.id,
        "ada@example.com",
        "Ada Lovelace",
    )
    assert customer.phone_number is None
    assert customer.unsubscribed is None

    # The same batch as NDJSON, through the client's bytes body.
    lines = b"\n".join(orjson.dumps(c.to_dict()) for c in batch.customers)
    again = sync_customers_batch.sync_detailed(
        business_id=business.id, client=client, body=types.File(payload=io.BytesIO(lines))
    )
    assert again.status_code == 202, again.content
    assert isinstance(again.parsed, models.Job)
    assert again.parsed.counts.total == 3

    # A dry run: the would-be record of a single sync (a new one has no id yet), then a batch whose results say what
    # would change, from what to what; nothing is written.
    preview = sync_business.sync_detailed(
        client=client, body=models.BusinessSync(name="Typed Co 2", external_id="typed-1"), dry_run=True
    )
    assert preview.status_code == 200, preview.content
    assert preview.headers["Sync-Outcome"] == "replaced"
    assert isinstance(preview.parsed, models.Business)  # an existing record: every field is there
    assert (preview.parsed.id, preview.parsed.name) == (business.id, "Typed Co 2")
    new = sync_business.sync_detailed(
        client=client, body=models.BusinessSync(name="N", external_id="n-1"), dry_run=True
    )
    assert isinstance(new.parsed, models.BusinessPreview)
    assert (new.parsed.id, new.parsed.created_at, new.parsed.name) == (None, None, "N")
    dry_batch = models.CustomerBatch(
        customers=[models.CustomerSync(external_id="c-1", email_address="ada@example.com", full_name="Ada King")]
    )
    dry = sync_customers_batch.sync_detailed(business_id=business.id, client=client, body=dry_batch, dry_run=True)
    assert dry.status_code == 202, dry.content
    assert isinstance(dry.parsed, models.Job)
    assert dry.parsed.dry_run is True
    dry_deadline = time.monotonic() + 60
    while get_job.sync(job_id=dry.parsed.id, client=client).status != models.JobStatus.COMPLETED:
        assert time.monotonic() < dry_deadline, "the dry run did not finish"
        time.sleep(0.1)
    [would] = job_results.sync(job_id=dry.parsed.id, client=client, external_id="c-1").data
    assert (would.outcome, would.id, would.changed_fields) == (models.Outcome.REPLACED, results[0].id, ["full_name"])
    change = would.changes["full_name"]
    assert isinstance(change, models.Change)
    assert (change.from_, change.to) == ("Ada Lovelace", "Ada King")
    assert get_customer.sync(customer_id=results[0].id, client=client).full_name == "Ada Lovelace"

    # A problem is typed too.
    missing = get_job.sync_detailed(job_id="job_missing", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == "not_found"
