"""GPU placement on the client side, without a Nova server: capacity detection (against a fake
``nvidia-smi`` put first on PATH), overrides, sizes, the ledger of what placed jobs hold, the
models' ``resources``/``constraints``/``placement``, the bodies the Client sends, the CLI's flags,
and the Worker's free-capacity bookkeeping against a small fake of the worker API."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest

import nova_client.capacity as capacity_module
from nova_client import (
    ActiveJob,
    CapacityLedger,
    ClaimedJob,
    Client,
    Constraints,
    Job,
    JobSpec,
    PlacedGPU,
    Placement,
    Resources,
    Worker,
    checked_capacity,
    detect_capacity,
    parse_mebibytes,
    parse_nvidia_smi,
)
from nova_client.__main__ import main

from helpers import wait_until

H100 = "NVIDIA H100 80GB HBM3"
TWO_H100 = f"0, GPU-0a1b, {H100}, 81559\n1, GPU-2c3d, {H100}, 81559\n"
HOST_MEMORY_MIB = 125000  # what the fake /proc/meminfo says


# -- Detection ------------------------------------------------------------------------------------


@pytest.fixture()
def host_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake /proc/meminfo (MemTotal 125000 MiB) and no cgroup limit files."""
    folder = tmp_path / "host"
    folder.mkdir()
    meminfo = folder / "meminfo"
    meminfo.write_text(f"MemTotal:       {HOST_MEMORY_MIB * 1024} kB\nMemFree:        1000 kB\n")
    monkeypatch.setattr(capacity_module, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(capacity_module, "_CGROUP_MEMORY_LIMITS",
                        (str(folder / "memory.max"), str(folder / "memory.limit_in_bytes")))
    return folder


def fake_nvidia_smi(folder: Path, monkeypatch: pytest.MonkeyPatch, output: str, status: int = 0,
                    stderr: str = "") -> Path:
    """Puts an executable ``nvidia-smi`` printing ``output`` first on PATH; it writes its
    arguments to ``args`` beside it."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{folder}/args"\n'
        f"cat <<'NOVA_EOF'\n{output}NOVA_EOF\n"
        f"cat >&2 <<'NOVA_EOF'\n{stderr}\nNOVA_EOF\n"
        f"exit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return folder / "args"


def test_detects_two_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_files: Path) -> None:
    args = fake_nvidia_smi(tmp_path / "bin", monkeypatch, TWO_H100)
    capacity = detect_capacity()
    assert args.read_text().split() == [
        "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
    assert capacity["gpus"] == [
        {"index": 0, "uuid": "GPU-0a1b", "model": H100, "memory_mib": 81559, "unified_memory": False},
        {"index": 1, "uuid": "GPU-2c3d", "model": H100, "memory_mib": 81559, "unified_memory": False},
    ]
    assert capacity["cpus"] == len(os.sched_getaffinity(0))
    assert capacity["memory_mib"] == HOST_MEMORY_MIB
    assert capacity["host"] == socket.gethostname().split(".")[0]
    assert capacity["labels"] == {}
    assert list(capacity) == ["host", "gpus", "cpus", "memory_mib", "labels"]
    json.dumps(capacity)  # what a claim sends


def test_unified_memory_gpu_gets_the_host_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 host_files: Path) -> None:
    # NVIDIA GB10 (DGX Spark): no memory of its own, nvidia-smi says [N/A].
    fake_nvidia_smi(tmp_path / "bin", monkeypatch, "0, GPU-5e6f, NVIDIA GB10, [N/A]\n")
    capacity = detect_capacity()
    assert capacity["gpus"] == [
        {"index": 0, "uuid": "GPU-5e6f", "model": "NVIDIA GB10", "memory_mib": HOST_MEMORY_MIB,
         "unified_memory": True},
    ]
    # A cgroup limit lowers the memory, the unified GPU's included.
    (host_files / "memory.max").write_text(f"{64000 << 20}\n")
    capacity = detect_capacity()
    assert capacity["memory_mib"] == 64000
    assert capacity["gpus"][0]["memory_mib"] == 64000


def test_no_nvidia_smi_on_path_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              host_files: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    capacity = detect_capacity()
    assert capacity["gpus"] == []
    assert capacity["cpus"] >= 1 and capacity["memory_mib"] == HOST_MEMORY_MIB


def test_failing_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_files: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    fake_nvidia_smi(tmp_path / "bin", monkeypatch, "", status=9,
                    stderr="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    with caplog.at_level(logging.WARNING, logger="nova_client"):
        capacity = detect_capacity()
    assert capacity["gpus"] == []
    assert "nvidia-smi exited with 9: NVIDIA-SMI has failed" in caplog.text


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (f"0, GPU-0a1b, {H100}, 81559\nthis is not a GPU\n", "nvidia-smi line 2: expected index, uuid, name, memory: "
                                                             "'this is not a GPU'"),
        ("0, GPU-0a1b, NVIDIA H100, lots\n", "nvidia-smi line 1: memory 'lots' is not a number of MiB"),
        ("x, GPU-0a1b, NVIDIA H100, 81559\n", "nvidia-smi line 1: expected index"),
        ("0, , NVIDIA H100, 81559\n", "nvidia-smi line 1: expected index"),
        ("-1, GPU-0a1b, NVIDIA H100, 81559\n", "nvidia-smi line 1: expected index"),
    ],
)
def test_malformed_nvidia_smi_output_is_an_error_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_files: Path, output: str, message: str
) -> None:
    fake_nvidia_smi(tmp_path / "bin", monkeypatch, output)
    with pytest.raises(ValueError) as raised:
        detect_capacity()
    assert message in str(raised.value)


def test_parse_nvidia_smi_skips_blank_lines_and_reads_not_supported_as_unified() -> None:
    gpus = parse_nvidia_smi(f"\n0, GPU-a, {H100}, 81559\r\n\n3, GPU-b, NVIDIA GB10, [Not Supported]\n", 1000)
    assert [(g["index"], g["memory_mib"], g["unified_memory"]) for g in gpus] == [(0, 81559, False), (3, 1000, True)]
    assert parse_nvidia_smi("", 1000) == []


def test_memory_is_lowered_to_the_cgroup_limit_when_it_is_a_number(host_files: Path) -> None:
    limit = host_files / "memory.max"
    limit.write_text("max\n")  # no limit
    assert detect_capacity(gpus=[])["memory_mib"] == HOST_MEMORY_MIB
    limit.write_text(f"{8 << 30}\n")
    assert detect_capacity(gpus=[])["memory_mib"] == 8192
    limit.write_text(f"{HOST_MEMORY_MIB * 2 << 20}\n")  # above the host's: the host's
    assert detect_capacity(gpus=[])["memory_mib"] == HOST_MEMORY_MIB
    limit.unlink()  # cgroup v1
    (host_files / "memory.limit_in_bytes").write_text(f"{4 << 30}\n")
    assert detect_capacity(gpus=[])["memory_mib"] == 4096


# -- Overrides ------------------------------------------------------------------------------------


@pytest.fixture()
def two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_files: Path) -> None:
    fake_nvidia_smi(tmp_path / "bin", monkeypatch, TWO_H100)


@pytest.mark.usefixtures("two_gpus")
def test_overrides_narrow_the_detected_capacity() -> None:
    assert [g["index"] for g in detect_capacity(gpus=[1])["gpus"]] == [1]
    assert [g["index"] for g in detect_capacity(gpus=[1, 0])["gpus"]] == [0, 1]
    assert detect_capacity(gpus=[])["gpus"] == []
    assert detect_capacity(gpus="none")["gpus"] == []
    assert [g["index"] for g in detect_capacity(gpus="0")["gpus"]] == [0]
    assert detect_capacity(cpus=1)["cpus"] == 1
    assert detect_capacity(memory_mib=16000)["memory_mib"] == 16000
    assert detect_capacity(labels={"zone": "b", "rack": "r1"})["labels"] == {"zone": "b", "rack": "r1"}
    assert detect_capacity(host="gpu-a")["host"] == "gpu-a"


@pytest.mark.usefixtures("two_gpus")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpus": [0, 5]}, "gpus: this host has no GPU 5 (it has 0,1)"),
        ({"gpus": [0, 0]}, "gpus: GPU 0 is named twice"),
        ({"gpus": [-1]}, "gpus: -1 is not a GPU index"),
        ({"gpus": "0,x"}, "gpus: '0,x' is not a list of GPU indices"),
        ({"cpus": 0}, "cpus: 0 is out of range 1...4096"),
        ({"cpus": 100000}, "cpus: 100000 is out of range"),
        ({"memory_mib": HOST_MEMORY_MIB + 1}, f"memory_mib: {HOST_MEMORY_MIB + 1} MiB is more than the "
                                              f"{HOST_MEMORY_MIB} MiB this host has"),
        ({"labels": {"bad key": "x"}}, "labels: 'bad key' is not a label key"),
        ({"labels": {"zone": ""}}, "labels.zone: must be a string of 1 to 200 characters"),
        ({"host": ""}, "host: must be a string of 1 to 200 characters"),
    ],
)
def test_bad_overrides_are_errors_naming_them(overrides: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        detect_capacity(**overrides)
    assert message in str(raised.value)


def test_more_cpus_than_detected_is_an_error(host_files: Path) -> None:
    with pytest.raises(ValueError, match=r"cpus: 4096 is more than the \d+ this host has"):
        detect_capacity(gpus=[], cpus=4096)


def test_checked_capacity_completes_and_checks_a_capacity_given_by_hand() -> None:
    capacity = checked_capacity({"host": "gpu-a", "cpus": 8, "gpus": [
        {"index": 1, "uuid": "GPU-y", "model": "NVIDIA GB10"},
        {"index": 0, "uuid": "GPU-x", "model": H100, "memory_mib": 81559, "unified_memory": False}]})
    assert capacity == {
        "host": "gpu-a",
        "gpus": [{"index": 1, "uuid": "GPU-y", "model": "NVIDIA GB10", "memory_mib": 0, "unified_memory": False},
                 {"index": 0, "uuid": "GPU-x", "model": H100, "memory_mib": 81559, "unified_memory": False}],
        "cpus": 8, "memory_mib": 0, "labels": {},
    }
    assert checked_capacity({})["host"] == socket.gethostname().split(".")[0]
    cases: List[tuple[Dict[str, Any], str]] = [
        ({"gpus": [gpu(0), gpu(0)]}, "capacity.gpus[1].index: GPU 0 is given twice"),
        ({"gpus": [{"uuid": "GPU-x", "model": H100}]}, "capacity.gpus[0].index: missing"),
        ({"gpus": [{"index": 0, "model": H100}]}, "capacity.gpus[0].uuid: missing"),
        ({"gpus": [{"index": 0, "uuid": "GPU-x"}]}, "capacity.gpus[0].model: missing"),
        ({"gpus": [{**gpu(0), "uuid": ""}]}, "capacity.gpus[0].uuid: must be a string of 1 to 200 characters"),
        ({"gpus": [{**gpu(0), "index": 1024}]}, "capacity.gpus[0].index: 1024 is out of range 0...1023"),
        ({"gpus": [{**gpu(0), "unified_memory": 1}]}, "capacity.gpus[0].unified_memory: must be true or false"),
        ({"gpus": [{**gpu(0), "vram": 1}]}, "capacity.gpus[0].vram: unknown"),
        ({"host": ""}, "capacity.host: must be a string of 1 to 200 characters"),
        ({"host": "a\nb"}, "capacity.host: must be a string of 1 to 200 characters on one line"),
        ({"labels": {"zone": "x" * 201}}, "capacity.labels.zone: must be a string of 1 to 200"),
        ({"cpus": 5000}, "capacity.cpus: 5000 is out of range 0...4096"),
        ({"gpus": "0,1"}, "capacity.gpus: must be a list"),
        ({"cpus": -1}, "capacity.cpus: -1 is out of range"),
        ({"cpus": 2.5}, "capacity.cpus: must be a whole number"),
        ({"memory": 1}, "capacity.memory: unknown"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError) as raised:
            checked_capacity(bad)
        assert message in str(raised.value), bad


@pytest.mark.parametrize(
    ("text", "mib"),
    [("40G", 40960), ("512M", 512), ("16000", 16000), ("1.5G", 1536), ("16GiB", 16384), ("512mib", 512),
     ("1T", 1048576), (" 2g ", 2048), ("1.0004", 1), ("0.001T", 1049)],
)
def test_sizes(text: str, mib: int) -> None:
    assert parse_mebibytes(text, "--memory") == mib


@pytest.mark.parametrize("text", ["", "G", "abc", "12X", "0", "-1G", "1.2.3G", "0.5", "16 GB", "1e3"])
def test_bad_sizes_name_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="^--gpu-memory: "):
        parse_mebibytes(text, "--gpu-memory")


# -- The ledger -----------------------------------------------------------------------------------


def gpu(index: int, model: str = H100, memory_mib: int = 81559) -> Dict[str, Any]:
    return {"index": index, "uuid": f"GPU-{index}", "model": model, "memory_mib": memory_mib, "unified_memory": False}


CAPACITY = {"host": "gpu-a", "gpus": [gpu(0), gpu(1)], "cpus": 16, "memory_mib": 64000, "labels": {"zone": "b"}}


def test_ledger_takes_and_gives_back_placements(caplog: pytest.LogCaptureFixture) -> None:
    ledger = CapacityLedger(CAPACITY)
    assert ledger.free() == CAPACITY and len(ledger) == 0
    ledger.take("job-a", {"host": "gpu-a", "gpus": [{"index": 1, "uuid": "GPU-1"}], "cpus": 4, "memory_mib": 16000})
    ledger.take("job-b", Placement(host="gpu-a", gpus=[], cpus=2, memory_mib=1000))
    ledger.take("job-c", None)  # asks for nothing
    ledger.take("job-d", Placement(host="gpu-a"))  # constraints only: holds nothing
    assert len(ledger) == 2
    free = ledger.free()
    assert [g["index"] for g in free["gpus"]] == [0]
    assert (free["cpus"], free["memory_mib"], free["labels"], free["host"]) == (10, 47000, {"zone": "b"}, "gpu-a")
    assert ledger.gpu_holders() == {1: "job-a"}
    # The same GPU placed for another job: logged, both recorded.
    with caplog.at_level(logging.WARNING, logger="nova_client"):
        ledger.take("job-e", Placement(host="gpu-a", gpus=[PlacedGPU(1, "GPU-1")]))
    assert "GPU 1 placed for job job-e is still held by job job-a" in caplog.text
    assert ledger.give_back("job-e") and ledger.give_back("job-a")
    assert not ledger.give_back("job-a") and not ledger.give_back("job-c")
    assert [g["index"] for g in ledger.free()["gpus"]] == [0, 1]
    assert ledger.free()["cpus"] == 14
    assert ledger.give_back("job-b")
    assert ledger.free() == CAPACITY
    # Never below zero; the capacity itself is not changed by what free() hands out.
    ledger.take("big", Placement(cpus=100, memory_mib=10 ** 6))
    assert (ledger.free()["cpus"], ledger.free()["memory_mib"]) == (0, 0)
    ledger.free()["gpus"].clear()
    assert ledger.capacity == CAPACITY


# -- Models ---------------------------------------------------------------------------------------

JOB: Dict[str, Any] = {
    "id": "01a22fed-f94f-7049-8952-a775da62fa81", "queue": "default", "kind": "py.train", "state": "running",
    "payload": {}, "priority": 0, "attempts": 1, "max_attempts": 5,
}
PLACED = {
    "resources": {"gpus": 2, "gpu_memory_mib": 40000, "cpus": 4, "memory_mib": 16000},
    "constraints": {"gpu_model": "*H100*", "labels": {"zone": "b"}},
    "placement": {"host": "gpu-a", "gpus": [{"index": 0, "uuid": "GPU-0a1b"}, {"index": 1, "uuid": "GPU-2c3d"}],
                  "cpus": 4, "memory_mib": 16000, "future_key": 1},
}


def test_job_reads_resources_constraints_and_placement() -> None:
    job = Job.from_json({**JOB, **PLACED})
    assert job.resources == Resources(gpus=2, gpu_memory_mib=40000, cpus=4, memory_mib=16000)
    assert job.constraints == Constraints(gpu_model="*H100*", host=None, labels={"zone": "b"})
    assert job.placement == Placement(host="gpu-a", gpus=[PlacedGPU(0, "GPU-0a1b"), PlacedGPU(1, "GPU-2c3d")],
                                      cpus=4, memory_mib=16000)
    assert job.visible_devices == "0,1"
    assert job.placement is not None and job.placement.visible_uuids == "GPU-0a1b,GPU-2c3d"
    # Absent (or null): None, and no devices.
    plain = Job.from_json({**JOB, "placement": None})
    assert (plain.resources, plain.constraints, plain.placement, plain.visible_devices) == (None, None, None, "")
    # Printed by the CLI as nested objects.
    printed = json.loads(json.dumps(dataclasses.asdict(job)))
    assert printed["placement"]["gpus"] == [{"index": 0, "uuid": "GPU-0a1b"}, {"index": 1, "uuid": "GPU-2c3d"}]
    assert printed["resources"] == PLACED["resources"]


def test_claimed_job_carries_its_placement_to_the_handler() -> None:
    claimed = ClaimedJob.from_json({**JOB, **PLACED, "lease": {"token": "7", "expires_at": "2026-12-01T05:00:00.000Z"}})
    assert claimed.as_job().placement == claimed.placement
    active = ActiveJob(claimed, Worker(Client("http://127.0.0.1:9", "t"), capacity=CAPACITY))
    assert active.placement == claimed.placement
    assert active.visible_devices == "0,1" and active.visible_uuids == "GPU-0a1b,GPU-2c3d"
    bare = ActiveJob(ClaimedJob.from_json({**JOB, "lease": "8"}), Worker(Client("http://127.0.0.1:9", "t")))
    assert (bare.placement, bare.visible_devices, bare.visible_uuids) == (None, "", "")


def test_resources_and_constraints_to_json() -> None:
    assert Resources(gpus=1).to_json() == {"gpus": 1, "gpu_memory_mib": 0, "cpus": 0, "memory_mib": 0}
    assert Constraints(host="spark-*").to_json() == {"host": "spark-*"}
    assert Constraints(gpu_model="*GB10*", labels={"zone": "b"}).to_json() == {
        "gpu_model": "*GB10*", "labels": {"zone": "b"}}


# -- A small fake of the API: records bodies, places jobs like the server ---------------------------


class FakeNova:
    """Answers the calls a Client and a Worker make, in memory. Claims place jobs on the capacity
    sent the way the server does (in order; the lowest free GPU indices that qualify); a job that
    asks for something is passed over without capacity."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.order: List[str] = []
        self.bodies: List[tuple[str, Any]] = []
        self.claims: List[Optional[Dict[str, Any]]] = []
        self.lost: Set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                status, answer = fake.answer(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, kind: str, resources: Optional[Dict[str, int]] = None,
            constraints: Optional[Dict[str, Any]] = None, payload: Optional[Dict[str, Any]] = None) -> str:
        id = str(uuid.uuid4())
        job: Dict[str, Any] = {"id": id, "queue": "q", "kind": kind, "state": "available", "payload": payload or {},
                               "priority": 0, "attempts": 0, "max_attempts": 3}
        if resources:
            job["resources"] = {**{k: 0 for k in ("gpus", "gpu_memory_mib", "cpus", "memory_mib")}, **resources}
        if constraints:
            job["constraints"] = {"labels": {}, **constraints}
        with self.lock:
            self.jobs[id] = job
            self.order.append(id)
            self.lock.notify_all()
        return id

    def state(self, id: str) -> str:
        with self.lock:
            return str(self.jobs[id]["state"])

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.bodies.append((path, body))
        if path == "/v1/jobs":
            return 201, {**JOB, "state": "available", "kind": body["kind"], "payload": body.get("payload", {})}
        if path == "/v1/jobs/batch":
            return 201, {"jobs": [{"id": str(uuid.uuid4()), "state": "available", "created": True}
                                  for _ in body["jobs"]]}
        if path == "/v1/workers/claim":
            return 200, {"jobs": self.claim(body)}
        with self.lock:
            if path == "/v1/jobs/heartbeat":
                return 200, {"results": [{"id": item["id"], "status": "lost" if item["id"] in self.lost else "extended",
                                          "expires_at": "2026-12-01T05:00:00.000Z"} for item in body["leases"]]}
            if path == "/v1/jobs/complete":
                for item in body["jobs"]:
                    self.jobs[item["id"]]["state"] = "succeeded"
                self.lock.notify_all()
                return 200, {"results": [{"id": item["id"], "recorded": True} for item in body["jobs"]]}
            if path == "/v1/jobs/release":
                for item in body["jobs"]:
                    self.jobs[item["id"]]["state"] = "available"
                self.lock.notify_all()
                return 200, {"released": len(body["jobs"])}
            if path.endswith("/fail"):
                id = path.split("/")[3]
                self.jobs[id]["state"] = "dead"
                self.lock.notify_all()
                return 200, {"id": id, "state": "dead"}
        return 404, {"error": {"code": "not_found", "message": path}}

    def claim(self, body: Dict[str, Any]) -> List[Dict[str, Any]]:
        free = body.get("capacity")
        deadline = time.monotonic() + float(body.get("wait_seconds", 0))
        with self.lock:
            self.claims.append(json.loads(json.dumps(free)) if free is not None else None)
            while True:
                taken = self.place(body, json.loads(json.dumps(free)) if free is not None else None)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                self.lock.wait(min(remaining, 0.05))

    def place(self, body: Dict[str, Any], free: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
        taken: List[Dict[str, Any]] = []
        for id in self.order:
            job = self.jobs[id]
            if len(taken) >= int(body.get("max", 1)) or job["state"] != "available":
                continue
            wants = job.get("resources") or {}
            if not wants and not job.get("constraints"):
                placement = None
            elif free is None:
                continue
            else:
                fitting = [g for g in sorted(free["gpus"], key=lambda g: g["index"])
                           if g["memory_mib"] >= wants.get("gpu_memory_mib", 0)]
                if len(fitting) < wants.get("gpus", 0) or free["cpus"] < wants.get("cpus", 0) \
                        or free["memory_mib"] < wants.get("memory_mib", 0):
                    continue
                gpus = fitting[:wants.get("gpus", 0)]
                placement = {"host": free["host"], "gpus": [{"index": g["index"], "uuid": g["uuid"]} for g in gpus],
                             "cpus": wants.get("cpus", 0), "memory_mib": wants.get("memory_mib", 0)}
                free["gpus"] = [g for g in free["gpus"] if g not in gpus]
                free["cpus"] -= placement["cpus"]
                free["memory_mib"] -= placement["memory_mib"]
            job["state"] = "running"
            job["attempts"] += 1
            job["placement"] = placement
            taken.append({**job, "lease": {"token": str(uuid.uuid4()), "expires_at": "2026-12-01T05:00:00.000Z"}})
        return taken


@pytest.fixture()
def fake() -> Iterator[FakeNova]:
    server = FakeNova()
    try:
        yield server
    finally:
        server.close()


# -- What the Client sends ------------------------------------------------------------------------


def test_enqueue_sends_resources_and_constraints(fake: FakeNova) -> None:
    client = Client(fake.url, "t")
    client.enqueue("py.train", {"n": 1}, resources={"gpus": 2, "gpu_memory_mib": 40000},
                   constraints={"gpu_model": "*H100*", "labels": {"zone": "b"}})
    client.enqueue("py.train", resources=Resources(gpus=1, cpus=4), constraints=Constraints(host="spark-*"))
    client.enqueue("py.echo")
    sent = [body for path, body in fake.bodies if path == "/v1/jobs"]
    assert sent[0] == {"kind": "py.train", "payload": {"n": 1}, "resources": {"gpus": 2, "gpu_memory_mib": 40000},
                       "constraints": {"gpu_model": "*H100*", "labels": {"zone": "b"}}}
    assert sent[1] == {"kind": "py.train", "resources": {"gpus": 1, "gpu_memory_mib": 0, "cpus": 4, "memory_mib": 0},
                       "constraints": {"host": "spark-*"}}
    assert sent[2] == {"kind": "py.echo"}
    # Values are the server's to check (it answers 422 naming the field); types are checked here.
    client.enqueue("py.train", resources={"gpus": -1})
    assert fake.bodies[-1][1]["resources"] == {"gpus": -1}
    with pytest.raises(TypeError, match="resources must be a mapping"):
        client.enqueue("py.train", resources=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="constraints must be a mapping .* not Resources"):
        client.enqueue("py.train", constraints=Resources(gpus=1))  # type: ignore[arg-type]


def test_enqueue_many_sends_resources_and_constraints(fake: FakeNova) -> None:
    client = Client(fake.url, "t")
    client.enqueue_many([
        JobSpec("py.train", resources=Resources(gpus=1), constraints={"host": "gpu-*"}),
        {"kind": "py.train", "resources": {"cpus": 2}, "constraints": Constraints(labels={"zone": "b"})},
        {"kind": "py.echo"},
    ])
    jobs = [body for path, body in fake.bodies if path == "/v1/jobs/batch"][0]["jobs"]
    assert jobs == [
        {"kind": "py.train", "resources": {"gpus": 1, "gpu_memory_mib": 0, "cpus": 0, "memory_mib": 0},
         "constraints": {"host": "gpu-*"}},
        {"kind": "py.train", "resources": {"cpus": 2}, "constraints": {"labels": {"zone": "b"}}},
        {"kind": "py.echo"},
    ]
    with pytest.raises(TypeError, match=r"jobs\[1\]\.resources must be a mapping"):
        client.enqueue_many([{"kind": "a"}, {"kind": "a", "resources": [1]}])
    with pytest.raises(TypeError, match=r"jobs\[0\]: unknown field 'resource'"):
        client.enqueue_many([{"kind": "a", "resource": {}}])


def test_claim_sends_the_capacity(fake: FakeNova) -> None:
    client = Client(fake.url, "t")
    client.claim("w", ["q"], capacity=CAPACITY)
    client.claim("w", ["q"])
    claims = [body for path, body in fake.bodies if path == "/v1/workers/claim"]
    assert claims[0]["capacity"] == CAPACITY
    assert "capacity" not in claims[1]


# -- The command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "two"], "error: --gpus must be a whole number (0 or more), not 'two'"),
        (["--gpus", "-1"], "error: --gpus must be a whole number (0 or more), not '-1'"),
        (["--cpus", "1.5"], "error: --cpus must be a whole number (0 or more), not '1.5'"),
        (["--memory", "12X"], "error: --memory: '12X' is not a size such as 16G, 512M or 16000 (MiB)"),
        (["--gpus", "1", "--gpu-memory", "lots"], "error: --gpu-memory: 'lots' is not a size"),
        (["--gpu-memory", "40G"], "error: --gpu-memory is the memory of each GPU: it needs --gpus 1 or more"),
        (["--gpus", "0", "--gpu-memory", "40G"], "error: --gpu-memory is the memory of each GPU"),
        (["--constraint", "zone=b"], "error: --constraint 'zone=b': unknown key 'zone'; expected gpu_model=PATTERN, "
                                     "host=PATTERN or label.NAME=VALUE"),
        (["--constraint", "host"], "error: --constraint 'host' is not KEY=VALUE"),
        (["--constraint", "host="], "error: --constraint 'host=' is not KEY=VALUE"),
        (["--constraint", "label.=b"], "error: --constraint 'label.=b': unknown key 'label.'"),
        (["--constraint", "host=a*", "--constraint", "host=b*"], "error: --constraint host is given twice"),
        (["--constraint", "label.zone=a", "--constraint", "label.zone=b"],
         "error: --constraint label.zone is given twice"),
    ],
)
def test_cli_refuses_bad_resource_flags_before_sending(
    fake: FakeNova, capsys: pytest.CaptureFixture[str], flags: List[str], message: str
) -> None:
    for command in ("enqueue", "run"):
        assert main([command, "py.train", *flags, "--url", fake.url, "--token", "t"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(message), captured.err
    assert fake.bodies == []


def test_cli_sends_resources_and_constraints(fake: FakeNova, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enqueue", "py.train", '{"epochs": 3}', "--gpus", "2", "--gpu-memory", "40G", "--cpus", "4",
                 "--memory", "16000", "--constraint", "gpu_model=*H100*", "--constraint", "host=spark-*",
                 "--constraint", "label.zone=b", "--constraint", "label.rack=r=1", "--url", fake.url, "--token", "t"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == JOB["id"]
    assert fake.bodies == [("/v1/jobs", {
        "kind": "py.train", "payload": {"epochs": 3},
        "resources": {"gpus": 2, "gpu_memory_mib": 40960, "cpus": 4, "memory_mib": 16000},
        "constraints": {"gpu_model": "*H100*", "host": "spark-*", "labels": {"zone": "b", "rack": "r=1"}},
    })]
    assert main(["enqueue", "py.train", "--memory", "1.5G", "--url", fake.url, "--token", "t"]) == 0
    assert fake.bodies[-1][1] == {"kind": "py.train", "resources": {"memory_mib": 1536}}


# -- The Worker's bookkeeping ---------------------------------------------------------------------


class Gate:
    """Handlers that block until released, recording what they hold."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Dict[str, str] = {}  # job id -> visible_devices
        self.seen: Dict[str, str] = {}
        self.overlaps: List[str] = []
        self.events: Dict[str, threading.Event] = {}

    def handler(self, job: ActiveJob) -> Dict[str, str]:
        with self.lock:
            mine = set(filter(None, job.visible_devices.split(",")))
            for other, devices in self.running.items():
                if mine & set(filter(None, devices.split(","))):
                    self.overlaps.append(f"{job.id} and {other} both hold {mine}")
            self.running[job.id] = job.visible_devices
            self.seen[job.id] = job.visible_devices
            event = self.events.setdefault(job.id, threading.Event())
        event.wait(20)
        with self.lock:
            del self.running[job.id]
        if job.payload.get("fail"):
            raise ValueError("failed on purpose")
        return {"devices": job.visible_devices}

    def release(self, id: str) -> None:
        with self.lock:
            self.events.setdefault(id, threading.Event()).set()

    def running_ids(self) -> Set[str]:
        with self.lock:
            return set(self.running)


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_worker_claims_with_the_free_capacity_and_gives_placements_back(fake: FakeNova) -> None:
    trains = [fake.add("py.train", {"gpus": 1, "cpus": 2, "memory_mib": 1000}) for _ in range(3)]
    huge = fake.add("py.train", {"gpus": 4})
    plain = fake.add("py.train")
    gate = Gate()
    worker = Worker(Client(fake.url, "t"), "q", capacity=CAPACITY, concurrency=4, wait_seconds=0.2, grace_seconds=5)
    worker.register("py.train", gate.handler)
    thread = start(worker)
    try:
        # Both GPUs go to two jobs; the third waits; the plain job runs beside them.
        wait_until(lambda: gate.running_ids() == {trains[0], trains[1], plain}, timeout=10, what="3 running")
        assert gate.seen[trains[0]] == "0" and gate.seen[trains[1]] == "1" and gate.seen[plain] == ""
        free = worker.free_capacity()
        assert free is not None
        assert (free["gpus"], free["cpus"], free["memory_mib"]) == ([], 12, 62000)
        wait_until(lambda: fake.claims[-1] is not None and fake.claims[-1]["gpus"] == [], what="a claim with no GPU")
        assert fake.state(trains[2]) == "available"
        # One ends: its GPU comes back and the third job gets it.
        gate.release(trains[1])
        wait_until(lambda: trains[2] in gate.running_ids(), timeout=10, what="the third job running")
        assert gate.seen[trains[2]] == "1"
        gate.release(plain)
        gate.release(trains[0])
        wait_until(lambda: fake.state(trains[0]) == "succeeded", what="job 1 succeeded")
        wait_until(lambda: (worker.free_capacity() or {}).get("gpus") == [gpu(0)], what="GPU 0 free")
        gate.release(trains[2])
        wait_until(lambda: fake.state(trains[2]) == "succeeded", what="job 3 succeeded")
        wait_until(lambda: worker.free_capacity() == CAPACITY, what="everything given back")
        assert fake.state(huge) == "available"  # 4 GPUs never fit 2
    finally:
        worker.stop(wait=True, timeout=20)
        thread.join(20)
    assert not gate.overlaps
    assert huge not in gate.seen
    assert worker.stats.succeeded == 4
    # Every claim carried a capacity no larger than the worker's; none offered a held GPU.
    assert all(claim is not None and claim["host"] == "gpu-a" for claim in fake.claims)


def test_lost_and_failed_jobs_give_their_placement_back(fake: FakeNova) -> None:
    first = fake.add("py.train", {"gpus": 1}, payload={"fail": True})
    second = fake.add("py.train", {"gpus": 1})
    gate = Gate()
    # One handler thread and one job prefetched: the second job waits, claimed, in the queue.
    worker = Worker(Client(fake.url, "t"), "q", capacity=CAPACITY, concurrency=1, prefetch=1, wait_seconds=0.2,
                    lease_seconds=0.6, grace_seconds=5)
    worker.register("py.train", gate.handler)
    thread = start(worker)
    third = ""
    try:
        wait_until(lambda: gate.running_ids() == {first}, timeout=10, what="the first job running")
        wait_until(lambda: (worker.free_capacity() or {}).get("gpus") == [], what="both GPUs held")
        # The queued job's lease is lost: it is dropped, and its GPU given back at once.
        with fake.lock:
            fake.lost.add(second)
        wait_until(lambda: (worker.free_capacity() or {}).get("gpus") == [gpu(1)], what="GPU 1 given back")
        assert worker.stats.lost == 1
        with fake.lock:
            fake.lost.clear()
            fake.jobs[second]["state"] = "dead"  # out of the way
        # The next job gets GPU 1 (queued behind the first); the first fails and gives GPU 0 back.
        third = fake.add("py.train", {"gpus": 1})
        wait_until(lambda: fake.state(third) == "running", what="the third job claimed")
        gate.release(first)
        wait_until(lambda: third in gate.running_ids(), timeout=10, what="the third job running")
        assert gate.seen[third] == "1"
        wait_until(lambda: fake.state(first) == "dead", what="the first job failed")
        wait_until(lambda: (worker.free_capacity() or {}).get("gpus") == [gpu(0)], what="GPU 0 given back")
        gate.release(third)
        wait_until(lambda: worker.free_capacity() == CAPACITY, what="everything given back")
    finally:
        worker.stop(wait=True, timeout=20)
        if third:
            gate.release(third)
        thread.join(20)
    assert not gate.overlaps
    assert worker.stats.failed == 1 and worker.stats.succeeded == 1


def test_stop_releases_queued_jobs_and_gives_their_placement_back(fake: FakeNova) -> None:
    first = fake.add("py.train", {"gpus": 1})
    second = fake.add("py.train", {"gpus": 1})
    gate = Gate()
    worker = Worker(Client(fake.url, "t"), "q", capacity=CAPACITY, concurrency=1, prefetch=1, wait_seconds=0.2,
                    grace_seconds=5)
    worker.register("py.train", gate.handler)
    thread = start(worker)
    wait_until(lambda: gate.running_ids() == {first}, timeout=10, what="the first job running")
    wait_until(lambda: fake.state(second) == "running", what="the second job claimed")
    worker.stop()
    wait_until(lambda: fake.state(second) == "available", what="the second job released")
    assert (worker.free_capacity() or {}).get("gpus") == [gpu(1)]
    gate.release(first)
    thread.join(20)
    assert not thread.is_alive()
    assert worker.free_capacity() == CAPACITY
    assert fake.state(first) == "succeeded"
    assert worker.stats.released == 1


def test_worker_capacity_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_files: Path) -> None:
    client = Client("http://127.0.0.1:9", "t")
    # Given: checked at once, narrowed by the overrides.
    worker = Worker(client, capacity=CAPACITY, gpus=[1], labels={"rack": "r1"})
    assert worker.capacity == {**CAPACITY, "gpus": [gpu(1)], "labels": {"zone": "b", "rack": "r1"}}
    with pytest.raises(ValueError, match="gpus: this host has no GPU 2"):
        Worker(client, capacity=CAPACITY, gpus=[2])
    with pytest.raises(ValueError, match=r"capacity.gpus\[0\].index: missing"):
        Worker(client, capacity={"gpus": [{}]})
    # Detected: when run() starts; a bad override is raised by run().
    fake_nvidia_smi(tmp_path / "bin", monkeypatch, TWO_H100)
    worker = Worker(client, gpus=[3])
    worker.register("py.train", lambda job: None)
    assert worker.capacity is None and worker.free_capacity() is None
    with pytest.raises(ValueError, match=r"gpus: this host has no GPU 3 \(it has 0,1\)"):
        worker.run()
    assert not worker.running
