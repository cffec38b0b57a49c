"""Field types and base models shared by every kind (Pod, Service, NetworkPolicy…).

Split from ``objects`` so kind modules (``netobjects``) can build on them
without an import cycle; ``objects`` re-exports every name.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

DEFAULT_NAMESPACE = "default"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _fail(message: str, hint: str) -> PydanticCustomError:
    """A validation error whose hint travels in its context to the error printer."""
    return PydanticCustomError("podlab", message, {"hint": hint})


def check_dns_label(value: str) -> str:
    """RFC 1123 label: namespaces and container names (Kubernetes' rule)."""
    if len(value) > 63 or not _LABEL.match(value):
        raise _fail(
            f"{value!r} is not a valid DNS-1123 label",
            "use at most 63 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit",
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """RFC 1123 subdomain: object names and node names (Kubernetes' rule)."""
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise _fail(
            f"{value!r} is not a valid DNS-1123 subdomain",
            "use lower-case letters, digits, '-' and '.', starting and ending with a "
            "letter or digit, e.g. 'web-1'",
        )
    return value


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise _fail(f"port {value} is out of range", "use a port between 1 and 65535")
    return value


def check_port_name(value: str) -> str:
    """IANA service name, as Kubernetes requires for named ports."""
    if len(value) > 15 or not _SVC_NAME.match(value) or "--" in value:
        raise _fail(
            f"{value!r} is not a valid port name",
            "use at most 15 lower-case letters, digits and single '-', e.g. 'http'",
        )
    if not re.search(r"[a-z]", value):
        raise _fail(f"port name {value!r} has no letter", "include a letter, e.g. 'p8080'")
    return value


def check_port_ref(value: Any) -> int | str:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _fail(
            f"port must be a number or a port name, got {type(value).__name__}",
            "write e.g. 8080 or 'http'",
        )
    return check_port(value) if isinstance(value, int) else check_port_name(value)


def check_label_key(value: str) -> str:
    """A label or annotation key: optional DNS prefix, '/', a name of ≤ 63 chars."""
    prefix, _, name = value.rpartition("/")
    if (prefix and len(prefix) > 253) or (prefix and not _SUBDOMAIN.match(prefix)):
        raise _fail(f"key {value!r} has an invalid prefix", "use a DNS name like 'example.com/'")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise _fail(
            f"key {value!r} is not a valid label key",
            "use ≤ 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric",
        )
    return value


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise _fail(
            f"label value {value!r} is not valid",
            "use ≤ 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric",
        )
    return value


DNSLabel = Annotated[str, AfterValidator(check_dns_label)]
DNSSubdomain = Annotated[str, AfterValidator(check_dns_subdomain)]
PortNumber = Annotated[int, AfterValidator(check_port)]
PortName = Annotated[str, AfterValidator(check_port_name)]
PortRef = Annotated[int | str, PlainValidator(check_port_ref)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    """Base of manifest models: unknown fields and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ObjectMeta(Strict):
    """``metadata``; uid, creationTimestamp and resourceVersion are set by podlab."""

    name: DNSSubdomain
    namespace: DNSLabel = DEFAULT_NAMESPACE
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)
    uid: str | None = None
    creationTimestamp: str | None = None
    resourceVersion: str | None = None


class ApiObject(Strict):
    """Common envelope of every kind. ``status`` in a manifest is accepted and dropped."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: dict[str, Any] | None = Field(default=None, exclude=True)
