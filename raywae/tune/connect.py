"""Join a Ray cluster (or start a local Ray) for a sweep; a cluster that cannot be joined is a
SweepError within seconds, naming the address and the fix (nothing listening, a refused token).
"""

from __future__ import annotations

import os
import socket

from raywae.tune.preflight import SweepError

GCS_TRIES = "RAY_gcs_server_port_wait_time_s"  # ray.init's tries at a cluster's GCS, 1 s apart
JOIN_TRIES = "3"  # (Ray's default: 20, read at each call): a refused token stays refused
TOKEN_FIX = (
    "export RAY_AUTH_MODE=token and the cluster's token: RAY_AUTH_TOKEN=... (`ray "
    "get-auth-token` on the head prints it) or a copy of the head's ~/.ray/auth_token "
    "(cluster/README.md, step 1)"
)


def connect(address: str | None, env: dict[str, str]) -> None:
    """ray.init with `env` for every trial: start a local Ray, or join the cluster at `address`
    (else RAY_ADDRESS; `auto`: the one `ray start` ran on this machine). A cluster it cannot
    join is a SweepError naming the address, within seconds: nothing listening there (a TCP
    probe first; Ray would try 20 times, ~40 s each), or a token it refuses (Ray: a
    ConnectionError from an AuthenticationError after 20 tries; no token: that error)."""
    import ray
    from ray._common.network_utils import parse_address
    from ray._private.services import canonicalize_bootstrap_address
    from ray.exceptions import AuthenticationError

    runtime_env = {"env_vars": env}
    from_env = os.environ.get("RAY_ADDRESS")
    by_env = bool(from_env) and address in (None, "auto")  # as ray.init decides
    chosen = from_env if by_env else address
    if not chosen:  # a local Ray (or, as Ray does, the one `ray start` last ran here)
        ray.init(ignore_reinit_error=True, runtime_env=runtime_env)
        return
    where = f"RAY_ADDRESS={chosen}" if by_env else f"--address {chosen}"
    target = None  # Ray Client (ray://): nothing to probe
    if "://" not in chosen:
        try:  # Ray's own resolution: RAY_ADDRESS, `auto`, the last `ray start`, localhost
            target = canonicalize_bootstrap_address(address)
        except (ConnectionError, ValueError) as err:  # `auto` with no cluster, a bad address
            raise SweepError(f"{where}: {err}") from None
    if target is not None:
        where += f", that is {target}" if target != chosen else ""
        host, port = parse_address(target)
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise SweepError(
                f"cannot join the Ray cluster ({where}): nothing is listening there "
                f"({getattr(err, 'strerror', None) or err}); start its head there (`ray start "
                f"--head --port {port}`), or pass the address the head printed (its GCS port, "
                "6379 by default, not the dashboard's 8265) as --address HOST:PORT or RAY_ADDRESS"
            ) from None
    scoped = target is not None and GCS_TRIES not in os.environ  # a user's setting stands
    if scoped:
        os.environ[GCS_TRIES] = JOIN_TRIES
    try:
        ray.init(address=address, ignore_reinit_error=True, runtime_env=runtime_env)
    except (ConnectionError, AuthenticationError) as err:
        missing = isinstance(err, AuthenticationError)  # token mode, but no token here
        if not missing and "AuthenticationError" not in str(err.__cause__):
            why = (str(err.__cause__ or "").strip().splitlines() or [""])[-1]  # Ray's reason
            raise SweepError(f"cannot join the Ray cluster ({where}): {err}; {why}") from None
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        problem = (
            f"RAY_AUTH_MODE is {mode} here, so none was sent (a driver joining by address "
            "sends one only with RAY_AUTH_MODE=token)"
            if mode.lower() != "token"
            else ("none was found here" if missing else "it is not the cluster's")
            + " (Ray reads RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else "
            "~/.ray/auth_token)"
        )
        raise SweepError(
            f"the Ray cluster ({where}) refused this driver's auth token: {problem}; {TOKEN_FIX}"
        ) from None
    finally:
        if scoped:
            del os.environ[GCS_TRIES]
