"""Connecting to Ray: :func:`ray_init` starts a local instance sized to the machine or joins a cluster.

Shared by every part that runs on Ray (the rung executor, sweeps, Ray Data jobs).
A bad address is a one-line :class:`AdaptError` (the CLI exits 2), checked with a plain TCP
connect first so a typo does not wait out Ray's own reconnect timeouts.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from adaptladder.errors import AdaptError

#: Seconds the TCP check of ``--ray-address`` waits for the head node to answer.
CONNECT_TIMEOUT_S = 5.0
DEFAULT_CLIENT_PORT = 10001


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a pinned dependency
        raise AdaptError("--executor ray needs Ray: pip install 'ray[tune,data]==2.60.0' (the README's set-up "
                         "installs it).") from e
    return ray


def parse_address(address: str) -> tuple[str, int] | None:
    """``host:port`` / ``ray://host:port`` -> (host, port); None for ``auto`` / ``local`` (Ray resolves those)."""
    if address in ("auto", "local"):
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        if address.startswith("ray://") and rest:
            return rest, DEFAULT_CLIENT_PORT
        raise AdaptError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), "
                         "'auto' or 'local'.")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AdaptError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), "
                         "'auto' or 'local'.")
    return host, int(port)


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One line when nothing listens at ``address`` (before Ray's own, much longer, retries)."""
    hp = parse_address(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        if isinstance(e, socket.timeout):
            why = f"no answer within {timeout_s:g} s"
        raise AdaptError(f"--ray-address {address}: no Ray cluster answers there ({why}); start one with "
                         "`ray start --head` and pass the address it prints, or drop --ray-address to start a "
                         "local Ray instance.") from None


@dataclass
class RayContext:
    """The Ray session adaptladder uses: ``started`` when this process started it (and shuts it down)."""

    address: str | None
    started: bool
    _closed: bool = field(default=False, repr=False)

    def nodes(self) -> list[dict[str, float]]:
        """The resources of each alive node (``CPU``, ``GPU``, ``memory`` bytes, ``accelerator_type:...``)."""
        ray = _import_ray()
        return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]

    def resources(self) -> dict[str, float]:
        return dict(_import_ray().cluster_resources())

    def describe(self) -> str:
        nodes = self.nodes()
        cpus = sum(n.get("CPU", 0) for n in nodes)
        gpus = sum(n.get("GPU", 0) for n in nodes)
        where = "a local Ray instance" if self.started else f"the Ray cluster at {self.address or 'auto'}"
        return (f"{where} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPUs"
                + (f", {gpus:g} GPUs" if gpus else "") + ")")

    def shutdown(self) -> None:
        if self.started and not self._closed:
            ray = _import_ray()
            if ray.is_initialized():
                ray.shutdown()
        self._closed = True

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def ray_init(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             quiet: bool = True) -> RayContext:
    """Join the Ray cluster at ``address`` (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``) or, without one,
    start a local Ray instance sized to this machine (its usable CPUs and GPUs).

    When this process is already connected (``ray.init`` called by the caller, as the tests do), that
    session is used as is and left running. Without an address a *new* local instance is started
    (``address="local"``), never another user's instance found on the machine.
    """
    ray = _import_ray()
    if address and address != "local":
        check_address(address)  # a bad address is an error even when this process already runs Ray
    if ray.is_initialized():
        return RayContext(address=_current_address(ray), started=False)
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": True,
                              "logging_level": logging.WARNING if quiet else logging.INFO}
    if address and address != "local":
        try:
            ray.init(address=address, **common)
        except Exception as e:  # ConnectionError, ValueError, RuntimeError...: one line, never a traceback
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AdaptError(f"--ray-address {address}: could not join a Ray cluster ({type(e).__name__}: "
                             f"{first}); check the address `ray start --head` printed, or drop --ray-address to "
                             "start a local Ray instance.") from None
        return RayContext(address=address, started=False)
    if num_cpus is None:
        from adaptladder.threads import usable_cores

        num_cpus = usable_cores()  # affinity mask and cgroup quota
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **common)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AdaptError(f"could not start a local Ray instance ({type(e).__name__}: {first}); "
                         "run without --executor ray, or start one with `ray start --head` and pass "
                         "--ray-address.") from None
    return RayContext(address=_current_address(ray), started=True)


def _current_address(ray: Any) -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return None
