"""GPU placement against a real server: resources and constraints submitted and read back, the
server's strict checks, claims with and without capacity, and Workers with a fixed capacity."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Set

import pytest

from nova_client import (
    ActiveJob,
    Client,
    Constraints,
    JobSpec,
    PlacedGPU,
    Placement,
    Resources,
    Unprocessable,
    Worker,
)

from conftest import NovaServer
from helpers import jobs_in, running, wait_until

H100 = "NVIDIA H100 80GB HBM3"
HOST = "test-gpu-host"
UUIDS = {0: "GPU-00000000-aaaa", 1: "GPU-11111111-bbbb"}


def two_gpus(labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """A fixed capacity: two H100s, 8 CPUs, 32000 MiB."""
    return {
        "host": HOST,
        "gpus": [{"index": index, "uuid": uuid, "model": H100, "memory_mib": 81559, "unified_memory": False}
                 for index, uuid in UUIDS.items()],
        "cpus": 8,
        "memory_mib": 32000,
        "labels": labels or {},
    }


def test_resources_and_constraints_are_stored_and_read_back(operator: Client, queue_name: str) -> None:
    job = operator.enqueue(
        "py.echo", {"n": 1}, queue=queue_name,
        resources={"gpus": 2, "gpu_memory_mib": 40000, "cpus": 4, "memory_mib": 16000},
        constraints={"gpu_model": "*H100*", "host": "spark-*", "labels": {"zone": "b"}},
    )
    resources = Resources(gpus=2, gpu_memory_mib=40000, cpus=4, memory_mib=16000)
    constraints = Constraints(gpu_model="*H100*", host="spark-*", labels={"zone": "b"})
    assert (job.resources, job.constraints, job.placement) == (resources, constraints, None)
    fetched = operator.get(job.id)
    assert (fetched.resources, fetched.constraints, fetched.placement) == (resources, constraints, None)
    [listed] = [j for j in jobs_in(operator, queue_name) if j.id == job.id]
    assert (listed.resources, listed.constraints) == (resources, constraints)
    # Partial: every resource key comes back (0 for those not asked); labels always.
    partial = operator.enqueue("py.echo", queue=queue_name, resources={"gpus": 1},
                               constraints=Constraints(labels={"zone": "b"}))
    assert operator.get(partial.id).resources == Resources(gpus=1)
    assert operator.get(partial.id).constraints == Constraints(labels={"zone": "b"})
    only_host = operator.enqueue("py.echo", queue=queue_name, constraints={"host": "gpu-*"})
    assert operator.get(only_host.id).constraints == Constraints(host="gpu-*", labels={})
    # (A job with requirements may show the resources it does not ask for as zeros.)
    assert operator.get(only_host.id).resources in (None, Resources())
    # A job that asks for nothing has neither.
    for plain in (operator.enqueue("py.echo", queue=queue_name),
                  operator.enqueue("py.echo", queue=queue_name, resources={"gpus": 0}, constraints={})):
        fetched = operator.get(plain.id)
        assert (fetched.resources, fetched.constraints, fetched.placement, fetched.visible_devices) == (
            None, None, None, "")
    # In a batch.
    submitted = operator.enqueue_many(
        [JobSpec("py.echo", resources=Resources(cpus=2, memory_mib=512)),
         {"kind": "py.echo", "constraints": {"gpu_model": "*GB10*"}, "resources": {"gpus": 1}}],
        queue=queue_name,
    )
    assert operator.get(submitted[0].id).resources == Resources(cpus=2, memory_mib=512)
    second = operator.get(submitted[1].id)
    assert (second.resources, second.constraints) == (Resources(gpus=1), Constraints(gpu_model="*GB10*"))


def test_invalid_resources_and_constraints_are_refused_naming_the_field(operator: Client, queue_name: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.echo", queue=queue_name, resources={"gpus": -1})
    assert raised.value.status == 422
    assert "resources.gpus" in raised.value.message
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.echo", queue=queue_name, resources={"gpus": 1.5})  # type: ignore[dict-item]
    assert "resources.gpus" in raised.value.message
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.echo", queue=queue_name, resources={"gpu": 1})
    assert "resources.gpu" in raised.value.message
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.echo", queue=queue_name, resources={"gpu_memory_mib": 40000})
    assert "resources.gpu_memory_mib" in raised.value.message
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue("py.echo", queue=queue_name, constraints={"gpu_model": ""})
    assert "constraints.gpu_model" in raised.value.message
    with pytest.raises(Unprocessable) as raised:
        operator.enqueue_many([{"kind": "py.echo"}, {"kind": "py.echo", "resources": {"gpus": -1}}], queue=queue_name)
    assert "jobs[1]" in raised.value.message and "resources.gpus" in raised.value.message
    assert jobs_in(operator, queue_name) == []


def test_concurrency_keys_are_sent_stored_and_limit_claims(
    operator: Client, worker_client: Client, queue_name: str
) -> None:
    first = operator.enqueue("py.echo", {"n": 1}, queue=queue_name, concurrency_key="tenant-a")
    assert first.concurrency_key == "tenant-a" and operator.get(first.id).concurrency_key == "tenant-a"
    submitted = operator.enqueue_many(
        [JobSpec("py.echo", concurrency_key="tenant-a"), {"kind": "py.echo", "concurrency_key": "tenant-b"}],
        queue=queue_name,
    )
    assert [operator.get(job.id).concurrency_key for job in submitted] == ["tenant-a", "tenant-b"]
    assert operator.get(operator.enqueue("py.echo", queue=queue_name).id).concurrency_key is None
    # One running job per key in this queue (set over HTTP as an operator): a claim for ten gets
    # one of tenant-a, the one of tenant-b and the job without a key.
    operator._call("POST", f"/v1/queues/{queue_name}/controls", {"max_running_per_key": 1}, retry_safe=False)
    claimed = worker_client.claim("py-keys", [queue_name], max=10)
    assert sorted(str(job.concurrency_key) for job in claimed) == ["None", "tenant-a", "tenant-b"]
    worker_client.release_many([(job.id, job.lease) for job in claimed])


def test_claim_without_capacity_gets_only_jobs_that_ask_for_nothing(
    operator: Client, worker_client: Client, queue_name: str
) -> None:
    gpu_job = operator.enqueue("py.echo", {"gpu": True}, queue=queue_name, priority=9, resources={"gpus": 1})
    pinned = operator.enqueue("py.echo", queue=queue_name, priority=8, constraints={"labels": {"zone": "b"}})
    plain = operator.enqueue("py.echo", queue=queue_name)
    claimed = worker_client.claim("py-no-capacity", [queue_name], max=10)
    assert [job.id for job in claimed] == [plain.id]
    assert claimed[0].placement is None
    worker_client.release_many([(job.id, job.lease) for job in claimed])
    # With capacity: the GPU job gets GPU 0, the pinned job a placement without GPUs.
    claimed = worker_client.claim("py-capacity", [queue_name], max=10, capacity=two_gpus({"zone": "b"}))
    by_id = {job.id: job for job in claimed}
    assert set(by_id) == {gpu_job.id, pinned.id, plain.id}
    assert by_id[gpu_job.id].placement == Placement(host=HOST, gpus=[PlacedGPU(0, UUIDS[0])], cpus=0, memory_mib=0)
    assert by_id[gpu_job.id].visible_devices == "0"
    placed = by_id[pinned.id].placement
    assert placed is not None and placed.host == HOST and placed.gpus == []
    assert by_id[plain.id].placement is None
    # The placement shows on the job while it runs.
    assert operator.get(gpu_job.id).placement == by_id[gpu_job.id].placement
    worker_client.release_many([(job.id, job.lease) for job in claimed])


def test_worker_with_two_gpus_never_gives_one_to_two_jobs(nova: NovaServer, operator: Client, queue_name: str) -> None:
    gpu_jobs = [operator.enqueue("py.slow", {"i": i}, queue=queue_name, resources={"gpus": 1}) for i in range(3)]
    big = operator.enqueue("py.slow", {"big": True}, queue=queue_name, resources={"gpus": 4})
    lock = threading.Lock()
    holding: Dict[str, Set[int]] = {}
    seen: Dict[str, Optional[Placement]] = {}
    overlaps: List[str] = []
    peak = [0]
    worker = Worker(nova.client("worker"), [queue_name], capacity=two_gpus(), concurrency=4, wait_seconds=1,
                    grace_seconds=5)

    @worker.job("py.slow")
    def slow(job: ActiveJob) -> Dict[str, str]:
        devices = {int(index) for index in job.visible_devices.split(",") if index}
        with lock:
            for other, held in holding.items():
                if held & devices:
                    overlaps.append(f"{job.id} got GPUs {sorted(devices)} while {other} holds {sorted(held)}")
            holding[job.id] = devices
            seen[job.id] = job.placement
            peak[0] = max(peak[0], len(holding))
        time.sleep(0.5)
        with lock:
            del holding[job.id]
        return {"devices": job.visible_devices}

    with running(worker):
        wait_until(lambda: all(operator.get(job.id).state == "succeeded" for job in gpu_jobs), timeout=30,
                   what="the three 1-GPU jobs succeeded")
        time.sleep(2.5)  # claims with both GPUs free go on: the 4-GPU job still does not fit
        assert operator.get(big.id).state == "available"
        assert worker.free_capacity() == worker.capacity
        # The registry shows the host's whole capacity (sent as host_capacity), not only what is free.
        [entry] = [entry for entry in operator.workers() if entry["id"] == worker.name]
        assert [gpu["uuid"] for gpu in entry["capacity"]["gpus"]] == list(UUIDS.values())
        assert entry["free"]["gpus"] == entry["capacity"]["gpus"]
    assert not overlaps
    assert peak[0] == 2  # both GPUs were used at once
    for job in gpu_jobs:
        done = operator.get(job.id)
        assert done.placement is not None and done.placement.host == HOST
        [device] = done.placement.gpus
        assert device.uuid == UUIDS[device.index]
        assert done.result == {"devices": str(device.index)}
        assert seen[job.id] == done.placement
    left = operator.get(big.id)
    assert (left.state, left.attempts, left.placement) == ("available", 0, None)
    assert big.id not in seen
    assert worker.stats.succeeded == 3 and worker.stats.claimed == 3


def test_worker_takes_only_jobs_that_fit_its_host(nova: NovaServer, operator: Client, queue_name: str) -> None:
    def submit(resources: Optional[Dict[str, int]] = None, constraints: Optional[Dict[str, Any]] = None) -> str:
        return operator.enqueue("py.echo", queue=queue_name, resources=resources, constraints=constraints).id

    fits = {
        "host": submit(constraints={"host": "test-gpu-*"}),
        "label": submit(constraints={"labels": {"zone": "b"}}),
        "model": submit({"gpus": 1, "gpu_memory_mib": 80000}, {"gpu_model": "*H100*"}),
        "cpus": submit({"cpus": 2, "memory_mib": 1000}),
    }
    misfits = {
        "host": submit(constraints={"host": "other-*"}),
        "label": submit(constraints={"labels": {"zone": "a"}}),
        "model": submit({"gpus": 1}, {"gpu_model": "*GB10*"}),
        "gpu memory": submit({"gpus": 1, "gpu_memory_mib": 100000}),
        "cpus": submit({"cpus": 64}),
        "memory": submit({"memory_mib": 64000}),
    }
    worker = Worker(nova.client("worker"), [queue_name], capacity=two_gpus({"zone": "b"}), wait_seconds=1,
                    grace_seconds=5)
    worker.register("py.echo", lambda job: {"devices": job.visible_devices})
    with running(worker):
        wait_until(lambda: all(operator.get(id).state == "succeeded" for id in fits.values()), timeout=30,
                   what="the jobs that fit succeeded")
        time.sleep(2.5)
    for what, id in misfits.items():
        job = operator.get(id)
        assert (job.state, job.attempts) == ("available", 0), what
    model = operator.get(fits["model"])
    assert model.placement is not None and model.placement.visible_devices == "0"
    assert model.result == {"devices": "0"}
    cpus = operator.get(fits["cpus"])
    assert cpus.placement == Placement(host=HOST, gpus=[], cpus=2, memory_mib=1000)
    assert operator.get(fits["host"]).result == {"devices": ""}
