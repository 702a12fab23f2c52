"""The OpenAPI components: every object the API reads or answers, declared once and referenced by `$ref`.

The routes read raw bodies and answer `Response`s built from dicts, so these models serve only the document. The
sync payloads are the core's validation models (`core.records.schemas`), so their fields and patterns are declared
in one place; the answers mirror the views the code returns (`business_view`, `customer_view`, `job_view`, the
results, the webhook views). `components()` turns them into `components/schemas`.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema

from core.jobs.status import JobStatus
from core.records.rules import Kind, Outcome
from core.records.schemas import READ_ONLY_FIELDS, WRITABLE, BusinessPayload, CustomerPayload
from core.webhooks.service import MAX_URL_LENGTH

Schema = dict[str, Any]
REF_TEMPLATE = "#/components/schemas/{model}"
_META = "Metadata"
_IDENTIFIED = (
    "Found by `id` (ours), else by `external_id` (yours): at least one of them is required (else "
    "`missing_identifier`). Create or replace: every writable property left out is blanked (null, or `{}` for "
    "`metadata`). The read-only properties of an object read from the API are accepted and ignored, so it can be "
    "sent back; any other property is an `unknown_field` error."
)


def ref(name: str) -> Schema:
    """A reference to the component `name`."""
    return {"$ref": REF_TEMPLATE.format(model=name)}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


JobType = Kind


class FieldError(_Model):
    """One fault of a field (or of a whole record when `path` is null)."""

    code: str = Field(description="A stable machine code, e.g. `invalid_email`")
    message: str
    path: str | None = Field(description="Where, e.g. `metadata.tags.0`; null for the record as a whole")


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine `code` and, where fields are at fault, `errors`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = Field(default=None, description="Present when fields are at fault")


class Business(_Model):
    """A business as stored."""

    id: str = Field(description="Our id, `biz_…`")
    object: Literal["business"]
    external_id: str | None
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class Customer(_Model):
    """A customer as stored."""

    id: str = Field(description="Our id, `cus_…`")
    object: Literal["customer"]
    business_id: str
    external_id: str | None
    email_address: str | None
    phone_number: str | None
    full_name: str | None
    metadata: dict[str, Any]
    unsubscribed: Literal["future", "campaign"] | None = Field(description="Read-only: sync never changes it")
    created_at: datetime
    updated_at: datetime


class BusinessPreview(_Model):
    """A dry run's business (`?dry_run=true`): the business as the sync would leave it, with its timestamps as
    stored; one the sync would create has no id nor timestamps yet (null)."""

    id: str | None = Field(description="Our id, `biz_…`; null when the sync would create the business")
    object: Literal["business"]
    external_id: str | None
    name: str
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


class CustomerPreview(_Model):
    """A dry run's customer (`?dry_run=true`): the customer as the sync would leave it, with its timestamps as
    stored; one the sync would create has no id nor timestamps yet (null)."""

    id: str | None = Field(description="Our id, `cus_…`; null when the sync would create the customer")
    object: Literal["customer"]
    business_id: str
    external_id: str | None
    email_address: str | None
    phone_number: str | None
    full_name: str | None
    metadata: dict[str, Any]
    unsubscribed: Literal["future", "campaign"] | None = Field(description="Read-only: sync never changes it")
    created_at: datetime | None
    updated_at: datetime | None


class BusinessSync(BusinessPayload):
    __doc__ = "A business to create or replace. " + _IDENTIFIED
    model_config = ConfigDict(title="BusinessSync")


class CustomerSync(CustomerPayload):
    __doc__ = "A customer to create or replace. " + _IDENTIFIED
    model_config = ConfigDict(title="CustomerSync")


class JobCounts(_Model):
    """How many records the job holds, how many have an outcome (`processed`), and how many of each outcome."""

    total: int = Field(ge=0)
    processed: int = Field(ge=0)
    created: int = Field(ge=0)
    replaced: int = Field(ge=0)
    unchanged: int = Field(ge=0)
    superseded: int = Field(ge=0)
    failed: int = Field(ge=0)
    cancelled: int = Field(ge=0)


class JobLinks(_Model):
    self: str
    results: str


class Job(_Model):
    """A batch sync job: queued, running, then completed, cancelled or failed."""

    id: str = Field(description="`job_…`")
    object: Literal["sync_job"]
    type: JobType
    business_id: str | None
    dry_run: bool = Field(
        description="A dry run (`?dry_run=true`): its outcomes are what would happen; nothing was written"
    )
    status: JobStatus
    counts: JobCounts
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    links: JobLinks


class Change(_Model):
    """A property's value now, and the value the sync would give it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Any = Field(alias="from", description="The value stored now")
    to: Any = Field(description="The value the sync would store")


class Result(_Model):
    """What became of one record of a job, by its index in the input; in a dry run, what would become of it."""

    index: int = Field(ge=0)
    outcome: Outcome
    id: str | None = Field(
        description="The record's id; null when it failed before one was found, or (in a dry run) "
        "when it would be created"
    )
    external_id: str | None
    changed_fields: list[str] = Field(
        description="For `replaced`: the properties whose value changed (would change, in a dry run); else empty"
    )
    errors: list[FieldError]
    # Absent rather than null where there is none: the document offers no null.
    changes: dict[str, Change] | SkipJsonSchema[None] = Field(
        default=None,
        description="Only in a dry run, for `replaced`: each changed property's value now and after the sync",
    )


class _List(_Model):
    object: Literal["list"]
    has_more: bool
    next_cursor: str | None = Field(description="Pass it as `starting_after` for the next page")


class BusinessList(_List):
    data: list[Business]


class CustomerList(_List):
    data: list[Customer]


class JobList(_List):
    data: list[Job]


class ResultList(_List):
    data: list[Result]


class BusinessBatch(_Model):
    """Businesses to sync; each element is judged alone, so one bad element fails only itself."""

    businesses: list[BusinessSync] = Field(min_length=1)


class CustomerBatch(_Model):
    """Customers to sync; each element is judged alone, so one bad element fails only itself."""

    customers: list[CustomerSync] = Field(min_length=1)


class BatchError(_Model):
    """One error of a record of a batch, by its input index."""

    index: int = Field(ge=0)
    external_id: str | None = None
    code: str
    message: str
    path: str | None = None


class BusinessBatchAnswer(_Model):
    """Pocketflows' synchronous batch answer (`Prefer: wait=N`): an object or null per input index, every error."""

    businesses: list[Business | None]
    errors: list[BatchError]
    job: Job


class CustomerBatchAnswer(_Model):
    """Pocketflows' synchronous batch answer (`Prefer: wait=N`): an object or null per input index, every error."""

    customers: list[Customer | None]
    errors: list[BatchError]
    job: Job


class WebhookSettings(_Model):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"format": "uri"},
        description="Where to POST job-finished events: https (a host, no credentials)",
    )
    rotate_secret: bool = Field(default=False, description="Replace the signing secret")


class Webhook(_Model):
    object: Literal["webhook"]
    url: str
    secret: str | None = Field(default=None, description="Only when just created or rotated: `whsec_…`")


class WebhookAttempt(_Model):
    attempt: int = Field(ge=1)
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int = Field(ge=0)


class WebhookDelivery(_Model):
    id: str
    object: Literal["webhook_delivery"]
    job_id: str
    event: Literal["sync_job.completed", "sync_job.cancelled", "sync_job.failed"]
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int = Field(ge=0)
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    history: list[WebhookAttempt]
    created_at: datetime
    updated_at: datetime | None = None
    delivered_at: datetime | None = None


class WebhookDeliveryList(_List):
    data: list[WebhookDelivery]


class LegacyBatchError(_Model):
    message: str
    path: str = Field(description="e.g. `customers[3].email_address`")


class LegacyCustomerBatchAnswer(_Model):
    customers: list[Customer | None]
    errors: list[LegacyBatchError]


class LegacyCustomerBatchUpdateAnswer(_Model):
    customers: list[Customer]


MODELS: tuple[type[BaseModel], ...] = (
    FieldError,
    Problem,
    Business,
    Customer,
    BusinessPreview,
    CustomerPreview,
    BusinessSync,
    CustomerSync,
    JobCounts,
    JobLinks,
    Job,
    Change,
    Result,
    BusinessList,
    CustomerList,
    JobList,
    ResultList,
    BusinessBatch,
    CustomerBatch,
    BatchError,
    BusinessBatchAnswer,
    CustomerBatchAnswer,
    WebhookSettings,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryList,
    LegacyBatchError,
    LegacyCustomerBatchAnswer,
    LegacyCustomerBatchUpdateAnswer,
)


def _tidy(schema: Schema) -> None:
    """No `title` on properties (generators would name types after them) and no `default: null` (an optional
    property left out is omitted, not sent as null: for a sync, null clears a value)."""
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if "default" in prop and prop["default"] is None:
            del prop["default"]


def _shared_metadata(schema: Schema) -> None:
    """Every `metadata` property refers to the one `Metadata` component (nullable where the model allows null)."""
    properties: Schema = schema.get("properties", {})
    if "metadata" not in properties:
        return
    nullable = "anyOf" in properties["metadata"]
    properties["metadata"] = {"anyOf": [ref(_META), {"type": "null"}]} if nullable else ref(_META)


def _legacy(base: Schema, *, keep: tuple[str, ...], required: tuple[str, ...], description: str) -> Schema:
    """A legacy body: some of a sync payload's properties (the same schemas), other required ones."""
    properties = {name: copy.deepcopy(base["properties"][name]) for name in keep}
    for name in required:
        if "anyOf" in properties[name]:  # required means a value: null is no longer one
            properties[name] = next(s for s in properties[name]["anyOf"] if s.get("type") != "null")
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        **({"required": list(required)} if required else {}),
        "additionalProperties": False,
    }


def components() -> dict[str, Schema]:
    """`components/schemas`: the models above, `Metadata`, and the legacy bodies derived from the sync payloads."""
    _, top = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF_TEMPLATE)
    schemas: dict[str, Schema] = top["$defs"]
    for name in ("BusinessSync", "CustomerSync"):
        for field in sorted(READ_ONLY_FIELDS):
            if field in schemas[name]["properties"]:
                schemas[name]["properties"][field]["description"] = "Read-only: accepted and ignored"
    for schema in schemas.values():
        _tidy(schema)
        _shared_metadata(schema)
    schemas[_META] = {
        "type": "object",
        "additionalProperties": True,
        "description": "Any JSON object: at most 16 KiB serialized, nested at most 16 levels deep (the object is "
        "level 1), numbers 64-bit integers or finite doubles, no NUL character",
    }
    business, customer = schemas["BusinessSync"], schemas["CustomerSync"]
    writable_business, writable_customer = WRITABLE["businesses"], WRITABLE["customers"]
    schemas["LegacyBusinessCreate"] = _legacy(
        business, keep=writable_business, required=("name",), description="A new business."
    )
    schemas["LegacyBusinessUpdate"] = _legacy(
        business,
        keep=("id", *writable_business, "object", "created_at", "updated_at"),
        required=(),
        description="Only the fields sent change.",
    )
    schemas["LegacyCustomerCreate"] = _legacy(
        customer, keep=writable_customer, required=("email_address",), description="A new customer."
    )
    schemas["LegacyCustomerUpdate"] = _legacy(
        customer,
        keep=("id", *writable_customer, *sorted(READ_ONLY_FIELDS)),
        required=(),
        description="Only the fields sent change.",
    )
    schemas["LegacyCustomerBatchUpdateItem"] = _legacy(
        customer,
        keep=("id", *writable_customer, *sorted(READ_ONLY_FIELDS)),
        required=("id",),
        description="A customer to update, by `id`: only the fields sent change.",
    )
    for name, item in (
        ("LegacyCustomerBatch", "LegacyCustomerCreate"),
        ("LegacyCustomerBatchUpdate", "LegacyCustomerBatchUpdateItem"),
    ):
        schemas[name] = {
            "type": "object",
            "required": ["customers"],
            "properties": {"customers": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ref(item)}},
            "additionalProperties": False,
        }
    return schemas
