"""Typed views of the JSON the Nova API answers. Unknown keys are ignored (forward compatible)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, TypeVar

__all__ = [
    "TERMINAL_STATES",
    "Resources",
    "Constraints",
    "PlacedGPU",
    "Placement",
    "Job",
    "ClaimedJob",
    "Page",
    "HeartbeatResult",
    "HeartbeatReply",
    "CompleteResult",
    "FailResult",
    "JobSpec",
    "Submitted",
    "parse_time",
]

#: States a job does not leave by itself.
TERMINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp of the API (``2026-12-01T05:00:00.000Z``) as an aware ``datetime``."""
    if value is None:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int:
    return int(value or 0)


@dataclass
class Resources:
    """What a job asks of the host it runs on (``resources`` of a job): GPUs, the memory each of
    them must have (MiB), CPUs and memory (MiB). Zero asks for none of that resource."""

    gpus: int = 0
    gpu_memory_mib: int = 0
    cpus: int = 0
    memory_mib: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Resources":
        return cls(
            gpus=_int(data.get("gpus")),
            gpu_memory_mib=_int(data.get("gpu_memory_mib")),
            cpus=_int(data.get("cpus")),
            memory_mib=_int(data.get("memory_mib")),
        )

    def to_json(self) -> dict[str, int]:
        """The ``resources`` object of a submission (all four keys)."""
        return {"gpus": self.gpus, "gpu_memory_mib": self.gpu_memory_mib, "cpus": self.cpus,
                "memory_mib": self.memory_mib}


@dataclass
class Constraints:
    """Where a job may run (``constraints`` of a job): the GPU model and the host name as glob
    patterns (``*H100*``, ``spark-*``; ``*`` and ``?`` match), and labels the host must carry with
    these values."""

    gpu_model: str | None = None
    host: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Constraints":
        labels = data.get("labels")
        return cls(
            gpu_model=_str_or_none(data.get("gpu_model")),
            host=_str_or_none(data.get("host")),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        )

    def to_json(self) -> dict[str, Any]:
        """The ``constraints`` object of a submission (only what is set)."""
        body: dict[str, Any] = {}
        if self.gpu_model is not None:
            body["gpu_model"] = self.gpu_model
        if self.host is not None:
            body["host"] = self.host
        if self.labels:
            body["labels"] = dict(self.labels)
        return body


@dataclass
class PlacedGPU:
    """One GPU of a :class:`Placement`: its ``nvidia-smi`` index (what ``CUDA_VISIBLE_DEVICES``
    names) and UUID."""

    index: int
    uuid: str = ""


@dataclass
class Placement:
    """Where a job's current (or last) attempt was placed: the worker's ``host``, the GPUs it holds
    there (its own until the attempt ends), and the CPUs and memory (MiB) it asked for."""

    host: str = ""
    gpus: list[PlacedGPU] = field(default_factory=list)
    cpus: int = 0
    memory_mib: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Placement":
        gpus = data.get("gpus")
        return cls(
            host=str(data.get("host", "")),
            gpus=[PlacedGPU(index=int(gpu["index"]), uuid=str(gpu.get("uuid", "")))
                  for gpu in (gpus if isinstance(gpus, list) else [])
                  if isinstance(gpu, Mapping) and gpu.get("index") is not None],
            cpus=_int(data.get("cpus")),
            memory_mib=_int(data.get("memory_mib")),
        )

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "gpus": [{"index": gpu.index, "uuid": gpu.uuid} for gpu in self.gpus],
                "cpus": self.cpus, "memory_mib": self.memory_mib}

    @property
    def visible_devices(self) -> str:
        """The GPU indices as ``CUDA_VISIBLE_DEVICES`` takes them: ``"0,1"`` (``""`` for none)."""
        return ",".join(str(gpu.index) for gpu in self.gpus)

    @property
    def visible_uuids(self) -> str:
        """The GPU UUIDs as ``NVIDIA_VISIBLE_DEVICES`` takes them (``""`` for none)."""
        return ",".join(gpu.uuid for gpu in self.gpus)


@dataclass
class Job:
    """A job as ``GET /v1/jobs/{id}`` shows it.

    Timestamps are kept as the RFC 3339 strings the server sent (UTC, milliseconds); use
    :func:`parse_time` (or the ``*_dt`` helpers) for ``datetime`` values. ``resources`` and
    ``constraints`` are what the job asks for (None when it asks for nothing), ``placement`` where
    its current or last attempt was placed (None when it was not placed: it asks for nothing, or
    its worker declared no capacity).
    """

    id: str
    queue: str = "default"
    kind: str = ""
    state: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 0
    idempotency_key: str | None = None
    run_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: Any = None
    last_error: str | None = None
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    resources: Resources | None = None
    constraints: Constraints | None = None
    placement: Placement | None = None
    concurrency_key: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Job":
        """Builds a job from its JSON object; keys this version does not know are ignored."""
        return cls(**_job_fields(data))

    @property
    def terminal(self) -> bool:
        """True when the job is ``succeeded``, ``dead`` or ``cancelled``."""
        return self.state in TERMINAL_STATES

    @property
    def visible_devices(self) -> str:
        """The indices of the GPUs placed for this attempt as ``CUDA_VISIBLE_DEVICES`` takes them
        (``"0,1"``); ``""`` when the job holds none (or has no placement)."""
        return self.placement.visible_devices if self.placement is not None else ""

    @property
    def run_at_dt(self) -> datetime | None:
        return parse_time(self.run_at)

    @property
    def created_at_dt(self) -> datetime | None:
        return parse_time(self.created_at)

    @property
    def updated_at_dt(self) -> datetime | None:
        return parse_time(self.updated_at)

    @property
    def started_at_dt(self) -> datetime | None:
        return parse_time(self.started_at)

    @property
    def finished_at_dt(self) -> datetime | None:
        return parse_time(self.finished_at)

    @property
    def lease_expires_at_dt(self) -> datetime | None:
        return parse_time(self.lease_expires_at)


def _job_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    payload = data.get("payload")
    return {
        "id": str(data["id"]),
        "queue": str(data.get("queue", "default")),
        "kind": str(data.get("kind", "")),
        "state": str(data.get("state", "")),
        "payload": payload if isinstance(payload, dict) else {},
        "priority": int(data.get("priority") or 0),
        "attempts": int(data.get("attempts") or 0),
        "max_attempts": int(data.get("max_attempts") or 0),
        "idempotency_key": _str_or_none(data.get("idempotency_key")),
        "run_at": _str_or_none(data.get("run_at")),
        "created_at": _str_or_none(data.get("created_at")),
        "updated_at": _str_or_none(data.get("updated_at")),
        "started_at": _str_or_none(data.get("started_at")),
        "finished_at": _str_or_none(data.get("finished_at")),
        "result": data.get("result"),
        "last_error": _str_or_none(data.get("last_error")),
        "lease_owner": _str_or_none(data.get("lease_owner")),
        "lease_expires_at": _str_or_none(data.get("lease_expires_at")),
        "resources": _parsed(Resources, data, "resources"),
        "constraints": _parsed(Constraints, data, "constraints"),
        "placement": _parsed(Placement, data, "placement"),
        "concurrency_key": _str_or_none(data.get("concurrency_key")),
    }


_Parsed = TypeVar("_Parsed", Resources, Constraints, Placement)


def _parsed(kind: type[_Parsed], data: Mapping[str, Any], key: str) -> _Parsed | None:
    """``data[key]`` read as ``kind``; None when absent, null or not an object."""
    value = data.get(key)
    return kind.from_json(value) if isinstance(value, Mapping) else None


@dataclass
class ClaimedJob(Job):
    """A job handed out by ``POST /v1/workers/claim``: a :class:`Job` plus its lease token.

    ``lease`` is the token that every report (heartbeat, complete, fail, release) must carry;
    ``lease_expires_at`` is the lease's expiry as claimed.
    """

    lease: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ClaimedJob":
        fields = _job_fields(data)
        lease = data.get("lease")
        token = ""
        if isinstance(lease, Mapping):
            token = str(lease.get("token", ""))
            if lease.get("expires_at") is not None:
                fields["lease_expires_at"] = str(lease["expires_at"])
        elif lease is not None:
            token = str(lease)
        return cls(**fields, lease=token)

    def as_job(self) -> Job:
        """The plain :class:`Job` part."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Job)}
        return Job(**values)


@dataclass
class Page:
    """One page of ``GET /v1/jobs``; ``next_cursor`` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None = None


@dataclass
class HeartbeatResult:
    """One lease of a batch heartbeat: ``status`` is ``extended``, ``cancelled`` or ``lost``."""

    id: str
    status: str
    expires_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HeartbeatResult":
        return cls(id=str(data["id"]), status=str(data.get("status", "")), expires_at=_str_or_none(data.get("expires_at")))

    @property
    def extended(self) -> bool:
        return self.status == "extended"

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def lost(self) -> bool:
        return self.status == "lost"


@dataclass
class HeartbeatReply:
    """The answer of a single-job heartbeat; ``expires_at`` is None once cancellation was requested."""

    id: str
    cancel_requested: bool
    expires_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HeartbeatReply":
        return cls(
            id=str(data["id"]),
            cancel_requested=bool(data.get("cancel_requested", False)),
            expires_at=_str_or_none(data.get("expires_at")),
        )


@dataclass
class CompleteResult:
    """One entry of a batch completion: ``recorded`` is False when the lease was lost."""

    id: str
    recorded: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CompleteResult":
        return cls(id=str(data["id"]), recorded=bool(data.get("recorded", False)))


@dataclass
class FailResult:
    """The answer of ``fail``: ``state`` is ``dead``, or ``failed`` (the server's state for a job
    waiting out its backoff; it runs again at ``run_at``; the first contract said ``available``)."""

    id: str
    state: str
    run_at: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FailResult":
        return cls(id=str(data["id"]), state=str(data.get("state", "")), run_at=_str_or_none(data.get("run_at")))


@dataclass
class JobSpec:
    """One job for :meth:`Client.enqueue_many`: the fields of a ``POST /v1/jobs`` body (only
    ``kind`` is required; None leaves a field out, so the server's default applies)."""

    kind: str
    payload: Mapping[str, Any] | None = None
    queue: str | None = None
    priority: int | None = None
    delay_seconds: float | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    resources: Mapping[str, int] | Resources | None = None
    constraints: Mapping[str, Any] | Constraints | None = None
    concurrency_key: str | None = None


@dataclass
class Submitted:
    """One job of a batch submission (``POST /v1/jobs/batch``): its ``id``, its ``state``
    (``available``, or ``scheduled`` when delayed; an existing job's current state) and whether it
    was ``created`` (False: an earlier job with the same idempotency key was returned)."""

    id: str
    state: str
    created: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Submitted":
        return cls(id=str(data["id"]), state=str(data.get("state", "")), created=bool(data.get("created", False)))
