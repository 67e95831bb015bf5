"""Starting or joining Ray for the rollout workers (`ray.address`, `ray.num_cpus`).

- `ray_address=None`: a local Ray is started (`num_cpus` = all CPUs unless given, no dashboard,
  object store capped at min(30% of RAM, 4 GiB)). A Ray already initialised in this process is reused.
- `ray_address="auto"`: join the cluster this machine belongs to (`ray start` ran here, or
  RAY_ADDRESS is set). `"host:port"`: join the cluster whose head listens there (GCS port, 6379 by
  default). Multi-node: on the head `ray start --head --port=6379 --num-cpus=N`, on every other node
  `ray start --address=HEAD_IP:6379`, all in the same Python environment (same venv path); then run
  the recipe anywhere in the cluster with `ray.address: auto` (or `HEAD_IP:6379`). The learner stays
  in the driver process; actors are placed by Ray. Model folders that exist only on the driver's
  disk are shipped to the other nodes through the object store (see factory.py).
- An address where no Ray head answers fails within ~20 s (a TCP connect, then a GCS request with a
  deadline, before `ray.init`, which would otherwise wait for minutes) with a one-line
  ConnectionError naming the address and what to do.
"""
from __future__ import annotations

import os
import socket
import threading


# ------------------------------------------------------------------------------- connecting
def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_reachable(address: str, timeout_s: float) -> None:
    """TCP-connect to a Ray head (host:port, optionally ray://); raise ConnectionError if it fails."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConnectionError(
            f"ray.address {address!r} is not `auto` or host:port (e.g. 10.0.0.5:6379); fix ray.address"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConnectionError(
            f"ray.address {address!r}: cannot reach a Ray head there ({_one_line(e)}); start one with "
            f"`ray start --head --port={port}` on that host, fix ray.address, or set it to null for a local Ray"
        ) from None


def _probe_gcs(address: str, timeout_s: float) -> None:
    """Ask the Ray GCS at `address` for a key; raise ConnectionError if nothing Ray-like answers.

    A TCP port that accepts connections is not enough (a proxy or another service would make
    `ray.init` wait for minutes), so a GCS request with a deadline is made in a daemon thread.
    Skipped (no error) if Ray's internal client is unavailable in this Ray version.
    """
    try:
        from ray._raylet import GcsClient
    except Exception:  # noqa: BLE001 - private API moved: rely on the TCP check alone
        return
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            GcsClient(address=address).internal_kv_get(b"compose_rl_probe", None, timeout=timeout_s)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 2.0)
    if not outcome:
        raise ConnectionError(
            f"ray.address {address!r}: no answer from a Ray head within {timeout_s + 2:.0f} s; check that "
            "`ray start --head` runs there and that the port is the GCS port (6379 by default)"
        )
    if outcome[0] is not None:
        raise ConnectionError(
            f"ray.address {address!r}: something answers there but it is not a Ray head ({_one_line(outcome[0])}); "
            "give the head's GCS address (ray start --head prints it) or set ray.address to null for a local Ray"
        )


def _resolve_auto() -> str:
    try:
        from ray._private.services import canonicalize_bootstrap_address

        addr = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        addr = None
    except Exception as e:  # noqa: BLE001 - private API: fall back to Ray's own error
        raise ConnectionError(f"ray.address 'auto': cannot find a running Ray cluster ({_one_line(e)})") from None
    if not addr:
        raise ConnectionError(
            "ray.address 'auto': no running Ray cluster on this machine (none started with `ray start` and "
            "RAY_ADDRESS unset); run `ray start --head` first, give host:port, or set ray.address to null for a local Ray"
        )
    return addr


def connect_ray(address: str | None = None, num_cpus: int | None = None, connect_timeout_s: float = 8.0) -> bool:
    """Make sure this process is connected to Ray; return True if this call started a local Ray.

    Reuses an existing connection. An unreachable `address` raises ConnectionError (one line) within
    about `connect_timeout_s`.
    """
    import ray

    if address:
        target = _resolve_auto() if address == "auto" else address
        _check_reachable(target, connect_timeout_s)
        if not target.startswith("ray://"):  # Ray Client addresses speak another protocol
            _probe_gcs(target, connect_timeout_s)
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=True)
        except Exception as e:  # noqa: BLE001
            raise ConnectionError(f"ray.address {address!r}: joining the cluster failed ({_one_line(e)})") from None
        return False
    total = _total_memory_bytes()
    store = int(min(0.3 * total, 4 * 2**30)) if total else None
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        include_dashboard=False,
        object_store_memory=store,
        log_to_driver=True,
        # Ray starts worker processes at nice 15 (its default `worker_niceness`): on a machine where
        # anything else runs at nice 0 a rollout worker then gets a few % of a core and its start
        # alone took minutes (measured on a 2-core machine at load ~12). Rollout workers are the
        # main workload, not background tasks: same priority as the learner.
        _system_config={"worker_niceness": 0},
    )
    return True


def _total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
