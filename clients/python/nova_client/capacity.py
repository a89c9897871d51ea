"""What a worker's host offers jobs (its *capacity*), detected the way ``nova worker`` detects it,
and the bookkeeping of what the jobs it runs hold of it.

A capacity is the JSON object that ``POST /v1/workers/claim`` takes as ``capacity``::

    {"host": "gpu-a",
     "gpus": [{"index": 0, "uuid": "GPU-…", "model": "NVIDIA H100 80GB HBM3", "memory_mib": 81559,
               "unified_memory": False}],
     "cpus": 16, "memory_mib": 64000, "labels": {"zone": "b"}}

:func:`detect_capacity` finds the host's: GPUs from ``nvidia-smi`` (none when it is not on
``PATH`` or fails), the CPUs this process may run on, the memory it may use (the host's, lowered
to its cgroup's limit) and the host name; the operator may narrow it (only some GPUs, fewer CPUs,
less memory) and add labels. :class:`CapacityLedger` keeps what placed jobs hold so that a worker
claims with what is still free.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .models import Placement

__all__ = [
    "NVIDIA_SMI_QUERY",
    "CapacityLedger",
    "checked_capacity",
    "detect_capacity",
    "parse_mebibytes",
    "parse_nvidia_smi",
]

logger = logging.getLogger("nova_client")

#: The fields ``nvidia-smi --query-gpu`` is asked for, in order (as ``nova worker`` asks).
NVIDIA_SMI_QUERY = "index,uuid,name,memory.total"
#: How long ``nvidia-smi`` may take: a hung driver must not hang the worker's start.
NVIDIA_SMI_TIMEOUT = 20.0

# Where the memory is read (module attributes, so that tests can point them elsewhere).
_MEMINFO = "/proc/meminfo"
_CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

#: nvidia-smi's memory for a GPU without memory of its own (GB10, DGX Spark: unified memory).
_NO_MEMORY = ("[N/A]", "[Not Supported]")
_WHOLE = re.compile(r"[0-9]+")
_LABEL_KEY = re.compile(r"[A-Za-z0-9._/-]{1,63}")
# The server's limits on a claim's capacity.
_MAX_CPUS = 4096
_MAX_TEXT = 200
_MAX_GPUS = 256
_MAX_GPU_INDEX = 1023
_MAX_GPU_MEMORY_MIB = 16 << 20
_MAX_MEMORY_MIB = 64 << 20
_MAX_LABELS = 64

#: A GPU index override: indices (an empty sequence: none), or the command line's ``"0,1"`` / ``"none"``.
GPUSelection = Union[Sequence[int], str]


# -- Detection --------------------------------------------------------------------------------------


def detect_capacity(
    gpus: Optional[GPUSelection] = None,
    cpus: Optional[int] = None,
    memory_mib: Optional[int] = None,
    labels: Optional[Mapping[str, str]] = None,
    host: Optional[str] = None,
) -> Dict[str, Any]:
    """This host's capacity, as ``nova worker`` detects it, narrowed by the overrides given.

    * GPUs: ``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``
      when ``nvidia-smi`` is on ``PATH``; none when it is not there or fails (logged as a warning).
      A GPU whose memory reads ``[N/A]`` (unified memory: NVIDIA GB10, DGX Spark) gets the host's
      memory and ``unified_memory: True``. Output that cannot be read raises ``ValueError`` naming
      the line.
    * CPUs: those this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``).
    * Memory (MiB): ``MemTotal`` of ``/proc/meminfo``, lowered to the cgroup's limit
      (``/sys/fs/cgroup/memory.max``) when that is a number.
    * Host: the host name up to its first dot.

    Overrides: ``gpus`` keeps only those indices (``[]`` or ``"none"``: no GPUs; ``"0,1"`` is read
    as on the command line), ``cpus`` and ``memory_mib`` replace what was detected (at most that:
    a typo must not advertise what is not there), ``labels`` are added, ``host`` replaces the name.
    A bad override (a GPU index this host does not have...) raises ``ValueError`` naming it.
    """
    memory = _host_memory_mib()
    detected: Dict[str, Any] = {
        "host": _host_name(),
        "gpus": _detect_gpus(memory),
        "cpus": _cpu_count(),
        "memory_mib": memory,
        "labels": {},
    }
    return _apply_overrides(detected, gpus=gpus, cpus=cpus, memory_mib=memory_mib, labels=labels, host=host)


def parse_nvidia_smi(output: str, host_memory_mib: int) -> List[Dict[str, Any]]:
    """The GPUs of ``nvidia-smi --query-gpu=index,uuid,name,memory.total
    --format=csv,noheader,nounits`` output: one line per GPU, ``0, GPU-…, NVIDIA H100 80GB HBM3,
    81559``. A memory of ``[N/A]`` (or ``[Not Supported]``) counts ``host_memory_mib`` and marks
    the GPU ``unified_memory``. A line that cannot be read raises ``ValueError`` naming it
    (``nvidia-smi line 2: …``, counting the non-empty lines)."""
    gpus: List[Dict[str, Any]] = []
    lines = [line for line in output.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 4 or not _WHOLE.fullmatch(fields[0]) or not fields[1]:
            raise ValueError(f"nvidia-smi line {number}: expected index, uuid, name, memory: {line!r}")
        unified = fields[3] in _NO_MEMORY
        if not unified and not _WHOLE.fullmatch(fields[3]):
            raise ValueError(f"nvidia-smi line {number}: memory {fields[3]!r} is not a number of MiB: {line!r}")
        gpus.append({
            "index": int(fields[0]),
            "uuid": fields[1],
            "model": fields[2],
            "memory_mib": host_memory_mib if unified else int(fields[3]),
            "unified_memory": unified,
        })
    return gpus


def _detect_gpus(host_memory_mib: int) -> List[Dict[str, Any]]:
    output, problem = _run_nvidia_smi()
    if output is None:
        logger.log(logging.INFO if problem == "nvidia-smi is not on PATH" else logging.WARNING, "no GPUs: %s", problem)
        return []
    return parse_nvidia_smi(output, host_memory_mib)


def _run_nvidia_smi() -> Tuple[Optional[str], Optional[str]]:
    """nvidia-smi's output, or None and why there is none."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None, "nvidia-smi is not on PATH"
    try:
        done = subprocess.run(
            [binary, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=NVIDIA_SMI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT:g} s"
    except OSError as error:
        return None, f"cannot run {binary}: {error}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines() or done.stdout.strip().splitlines()
        return None, f"nvidia-smi exited with {done.returncode}" + (f": {said[0]}" if said else "")
    return done.stdout, None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _host_memory_mib() -> int:
    """The memory this process may use, in MiB: the host's, or its cgroup's limit when lower."""
    total = _memory_total_mib()
    limit: Optional[int] = None
    for path in _CGROUP_MEMORY_LIMITS:
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                text = file.read().strip()
        except OSError:
            continue
        if _WHOLE.fullmatch(text):  # cgroup v2 writes "max" for no limit
            limit = int(text) >> 20
            break
    if limit is None or limit <= 0:
        return total
    return min(total, limit) if total > 0 else limit


def _memory_total_mib() -> int:
    """``MemTotal`` of /proc/meminfo in MiB; where there is none, the physical pages (0 if unknown)."""
    try:
        with open(_MEMINFO, encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    parts = line.split()
                    return int(parts[1]) // 1024 if len(parts) > 1 and parts[1].isdigit() else 0
        return 0
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    except (AttributeError, ValueError, OSError):
        return 0


def _host_name() -> str:
    return socket.gethostname().split(".")[0] or "host"


# -- Overrides and explicit capacities --------------------------------------------------------------


def _apply_overrides(
    capacity: Mapping[str, Any],
    *,
    gpus: Optional[GPUSelection] = None,
    cpus: Optional[int] = None,
    memory_mib: Optional[int] = None,
    labels: Optional[Mapping[str, str]] = None,
    host: Optional[str] = None,
) -> Dict[str, Any]:
    """``capacity`` narrowed by the operator's overrides (see :func:`detect_capacity`)."""
    result = checked_capacity(capacity)
    if gpus is not None:
        indices = _gpu_indices(gpus)
        present = [gpu["index"] for gpu in result["gpus"]]
        for index in indices:
            if index not in present:
                have = ",".join(str(i) for i in present) or "none"
                raise ValueError(f"gpus: this host has no GPU {index} (it has {have})")
        result["gpus"] = [gpu for gpu in result["gpus"] if gpu["index"] in indices]
    if cpus is not None:
        _check_whole(cpus, "cpus", 1, _MAX_CPUS)
        if cpus > result["cpus"]:
            raise ValueError(f"cpus: {cpus} is more than the {result['cpus']} this host has")
        result["cpus"] = cpus
    if memory_mib is not None:
        _check_whole(memory_mib, "memory_mib", 1, None)
        if memory_mib > result["memory_mib"]:
            raise ValueError(f"memory_mib: {memory_mib} MiB is more than the {result['memory_mib']} MiB this host has")
        result["memory_mib"] = memory_mib
    if labels is not None:
        result["labels"].update(_checked_labels(labels, "labels"))
    if host is not None:
        result["host"] = _checked_text(host, "host")
    return result


def _gpu_indices(gpus: GPUSelection) -> List[int]:
    if isinstance(gpus, str):
        text = gpus.strip()
        if text == "none":
            return []
        parts = text.split(",")
        if not all(_WHOLE.fullmatch(part.strip()) for part in parts):
            raise ValueError(f"gpus: {gpus!r} is not a list of GPU indices such as 0,1 (or none)")
        indices = [int(part) for part in parts]
    else:
        indices = list(gpus)
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"gpus: {index!r} is not a GPU index (a whole number, 0 or more)")
    for position, index in enumerate(indices):
        if index in indices[:position]:
            raise ValueError(f"gpus: GPU {index} is named twice")
    return indices


def checked_capacity(capacity: Mapping[str, Any]) -> Dict[str, Any]:
    """A capacity given by hand, checked as the server checks a claim's and completed: a new dict
    with every key (``host`` defaults to this host's name, ``gpus`` and ``labels`` to none,
    ``cpus`` and ``memory_mib`` to 0; a GPU's ``memory_mib`` to 0 and ``unified_memory`` to False;
    its ``index``, ``uuid`` and ``model`` are required). An unknown key, a wrong type, a number out
    of range or a GPU index given twice raises ``ValueError`` naming the field
    (``capacity.gpus[1].uuid``)."""
    if not isinstance(capacity, Mapping):
        raise ValueError(f"capacity: must be a mapping (a JSON object), not {type(capacity).__name__}")
    known = ("host", "gpus", "cpus", "memory_mib", "labels")
    for key in capacity:
        if key not in known:
            raise ValueError(f"capacity.{key}: unknown; expected one of {', '.join(known)}")
    host = capacity.get("host")
    host = _host_name() if host is None else _checked_text(host, "capacity.host")
    raw_gpus = capacity.get("gpus")
    if raw_gpus is None:
        raw_gpus = []
    if isinstance(raw_gpus, (str, bytes, Mapping)) or not isinstance(raw_gpus, Sequence):
        raise ValueError(f"capacity.gpus: must be a list of GPUs, not {type(raw_gpus).__name__}")
    if len(raw_gpus) > _MAX_GPUS:
        raise ValueError(f"capacity.gpus: at most {_MAX_GPUS} GPUs, not {len(raw_gpus)}")
    gpus: List[Dict[str, Any]] = []
    for position, gpu in enumerate(raw_gpus):
        field = f"capacity.gpus[{position}]"
        if not isinstance(gpu, Mapping):
            raise ValueError(f"{field}: must be a mapping, not {type(gpu).__name__}")
        for key in gpu:
            if key not in ("index", "uuid", "model", "memory_mib", "unified_memory"):
                raise ValueError(f"{field}.{key}: unknown; expected one of index, uuid, model, memory_mib, unified_memory")
        for key in ("index", "uuid", "model"):
            if key not in gpu:
                raise ValueError(f"{field}.{key}: missing")
        index = _check_whole(gpu["index"], f"{field}.index", 0, _MAX_GPU_INDEX)
        if any(other["index"] == index for other in gpus):
            raise ValueError(f"{field}.index: GPU {index} is given twice")
        uuid = _checked_text(gpu["uuid"], f"{field}.uuid")
        model = _checked_text(gpu["model"], f"{field}.model")
        unified = gpu.get("unified_memory", False)
        if not isinstance(unified, bool):
            raise ValueError(f"{field}.unified_memory: must be true or false, not {unified!r}")
        gpus.append({
            "index": index,
            "uuid": uuid,
            "model": model,
            "memory_mib": _check_whole(gpu.get("memory_mib", 0), f"{field}.memory_mib", 0, _MAX_GPU_MEMORY_MIB),
            "unified_memory": unified,
        })
    labels = capacity.get("labels")
    return {
        "host": host,
        "gpus": gpus,
        "cpus": _check_whole(capacity.get("cpus", 0), "capacity.cpus", 0, _MAX_CPUS),
        "memory_mib": _check_whole(capacity.get("memory_mib", 0), "capacity.memory_mib", 0, _MAX_MEMORY_MIB),
        "labels": {} if labels is None else _checked_labels(labels, "capacity.labels"),
    }


def _check_whole(value: Any, field: str, low: int, high: Optional[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}: must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}...{high}" if high is not None else f"{low} or more"
        raise ValueError(f"{field}: {value} is out of range {bounds}")
    return value


def _checked_text(value: Any, field: str) -> str:
    if (not isinstance(value, str) or not value or len(value.encode("utf-8")) > _MAX_TEXT
            or any(char in value for char in "\n\r\v\f\x85\u2028\u2029")):
        raise ValueError(f"{field}: must be a string of 1 to {_MAX_TEXT} characters on one line, not {value!r}")
    return value


def _checked_labels(labels: Any, field: str) -> Dict[str, str]:
    if not isinstance(labels, Mapping):
        raise ValueError(f"{field}: must be a mapping of key to value, not {type(labels).__name__}")
    if len(labels) > _MAX_LABELS:
        raise ValueError(f"{field}: at most {_MAX_LABELS} labels, not {len(labels)}")
    checked: Dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"{field}: {key!r} is not a label key (1 to 63 letters, digits, '.', '-', '_', '/')")
        checked[key] = _checked_text(value, f"{field}.{key}")
    return checked


def parse_mebibytes(text: str, field: str = "size") -> int:
    """``16G``, ``16GiB``, ``16000M``, ``512MiB``, ``1.5T`` or a plain number of MiB, as MiB (the
    sizes ``nova`` takes). Anything else raises ``ValueError`` naming ``field``."""
    trimmed = text.strip()
    digits = ""
    for char in trimmed:
        if not (char.isascii() and (char.isdigit() or char == ".")):
            break
        digits += char
    unit = trimmed[len(digits):].lower()
    factors = {"": 1.0, "m": 1.0, "mi": 1.0, "mib": 1.0, "g": 1024.0, "gi": 1024.0, "gib": 1024.0,
               "t": 1048576.0, "ti": 1048576.0, "tib": 1048576.0}
    try:
        value = float(digits)
    except ValueError:
        value = 0.0
    if unit not in factors or not value > 0:
        raise ValueError(f"{field}: {text!r} is not a size such as 16G, 512M or 16000 (MiB)")
    mebibytes = value * factors[unit]
    if not 1 <= mebibytes < 1e12:
        raise ValueError(f"{field}: {text!r} is out of range")
    return int(math.floor(mebibytes + 0.5))


# -- What placed jobs hold --------------------------------------------------------------------------


class CapacityLedger:
    """A worker's capacity and what the jobs placed on it hold: their GPUs (by index), CPUs and
    memory. :meth:`free` is what is left, the ``capacity`` to claim with.

    A job takes its placement when it is claimed (:meth:`take`) and gives it back when its attempt
    ends here (:meth:`give_back`). Not thread-safe: the caller serialises (the Worker does so under
    its lock).
    """

    def __init__(self, capacity: Mapping[str, Any]) -> None:
        self._capacity = checked_capacity(capacity)
        self._held: Dict[str, Placement] = {}

    @property
    def capacity(self) -> Dict[str, Any]:
        """The whole capacity (a copy)."""
        return _copy(self._capacity)

    @property
    def holders(self) -> Dict[str, Placement]:
        """Each holder (a job id) and its placement (a copy)."""
        return dict(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def gpu_holders(self) -> Dict[int, str]:
        """The GPU indices held, each with its holder."""
        return {gpu.index: key for key, placement in self._held.items() for gpu in placement.gpus}

    def take(self, key: str, placement: Union[Placement, Mapping[str, Any], None]) -> None:
        """Records that ``key`` (a job id) holds ``placement`` (nothing for None, or a placement
        of no GPUs, CPUs or memory). A GPU already held by another job is logged: the server placed
        it twice, or capacity was sent that this ledger did not give."""
        if placement is None:
            return
        if not isinstance(placement, Placement):
            placement = Placement.from_json(placement)
        if not placement.gpus and placement.cpus <= 0 and placement.memory_mib <= 0:
            return
        holders = self.gpu_holders()
        for gpu in placement.gpus:
            other = holders.get(gpu.index)
            if other is not None and other != key:
                logger.warning("GPU %d placed for job %s is still held by job %s", gpu.index, key, other)
        self._held[key] = placement

    def give_back(self, key: str) -> bool:
        """Frees what ``key`` holds; True when it held something."""
        return self._held.pop(key, None) is not None

    def free(self) -> Dict[str, Any]:
        """The capacity less what is held: the held GPUs left out, their CPUs and memory taken off
        (never below 0)."""
        free = _copy(self._capacity)
        if not self._held:
            return free
        taken = {gpu.index for placement in self._held.values() for gpu in placement.gpus}
        free["gpus"] = [gpu for gpu in free["gpus"] if gpu["index"] not in taken]
        free["cpus"] = max(0, free["cpus"] - sum(p.cpus for p in self._held.values()))
        free["memory_mib"] = max(0, free["memory_mib"] - sum(p.memory_mib for p in self._held.values()))
        return free


def _copy(capacity: Dict[str, Any]) -> Dict[str, Any]:
    copied = dict(capacity)
    copied["gpus"] = [dict(gpu) for gpu in capacity["gpus"]]
    copied["labels"] = dict(capacity["labels"])
    return copied


def _describe_capacity(capacity: Mapping[str, Any]) -> str:
    """One line for a log: ``host gpu-a: GPUs 0 (NVIDIA H100 80GB HBM3), 1 (…); 16 CPUs; 64000 MiB``."""
    gpus = ", ".join(f"{gpu['index']} ({gpu.get('model') or '?'})" for gpu in capacity.get("gpus", [])) or "none"
    labels = ",".join(f"{k}={v}" for k, v in sorted(capacity.get("labels", {}).items()))
    text = f"host {capacity.get('host')}: GPUs {gpus}; {capacity.get('cpus')} CPUs; {capacity.get('memory_mib')} MiB"
    return text + (f"; labels {labels}" if labels else "")
