"""Where the mesh is and how to prove who we are: addresses, bearer token, TLS files and deadline.

Resolved, highest first, from explicit arguments, then the environment (``TDEV_REGISTRY_ADDRESS`` ...,
``TDEV_TOKEN``, ``TDEV_TLS_CA_FILE``, ``TDEV_TLS_CLIENT_CERT_FILE``, ``TDEV_TLS_CLIENT_KEY_FILE``), then the
selected profile of the profiles file (``TDEV_PROFILES_FILE``, default ``~/.config/tdev/profiles.toml``), then
the loopback defaults of ``make run``. The profile is ``profile=``, else ``TDEV_PROFILE``, else ``default`` when
the file has one.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

SERVICES = ("registry", "workflow", "builder", "evolution")
DEFAULT_ADDRESSES = {"registry": "127.0.0.1:50051", "workflow": "127.0.0.1:50052",
                     "builder": "127.0.0.1:50053", "evolution": "127.0.0.1:50054"}
_ENV = {"registry": "TDEV_REGISTRY_ADDRESS", "workflow": "TDEV_WORKFLOW_ADDRESS",
        "builder": "TDEV_BUILDER_ADDRESS", "evolution": "TDEV_EVOLUTION_ADDRESS",
        "ca_file": "TDEV_TLS_CA_FILE", "cert_file": "TDEV_TLS_CLIENT_CERT_FILE",
        "key_file": "TDEV_TLS_CLIENT_KEY_FILE", "deadline_seconds": "TDEV_CLIENT_DEADLINE_SECONDS"}
# TDEV_SERVICE_TOKEN is what the services themselves send: a shell set up like a service works too.
_TOKEN_ENV = ("TDEV_TOKEN", "TDEV_SERVICE_TOKEN")


class ConnectionError_(ValueError):
    """The connection settings are unusable (unknown profile, unreadable file); the message says which."""


@dataclass(frozen=True)
class Connection:
    """Everything needed to open channels to the mesh."""

    registry: str = DEFAULT_ADDRESSES["registry"]
    workflow: str = DEFAULT_ADDRESSES["workflow"]
    builder: str = DEFAULT_ADDRESSES["builder"]
    evolution: str = DEFAULT_ADDRESSES["evolution"]
    token: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    deadline_seconds: float = 30.0
    profile: str = ""

    def __repr__(self) -> str:  # the token never reaches a log or a traceback
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}
        return f"Connection({shown}, token={'set' if self.token else 'unset'})"

    def address(self, service: str) -> str:
        """The address of one of :data:`SERVICES`."""
        return str(getattr(self, service))

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """The CA, client certificate and key as bytes (None when not set)."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConnectionError_("a client certificate needs its key and the key its certificate "
                                   "(--cert with --key, TDEV_TLS_CLIENT_CERT_FILE with TDEV_TLS_CLIENT_KEY_FILE)")
        if self.cert_file is not None and self.ca_file is None:
            raise ConnectionError_("a client certificate is only sent over TLS: set the CA too (--ca, "
                                   "TDEV_TLS_CA_FILE)")
        return tuple(_read(path) for path in (self.ca_file, self.cert_file, self.key_file))  # type: ignore[return-value]

    @classmethod
    def resolve(cls, *, profile: str | None = None, environ: Mapping[str, str] | None = None,
                profiles_file: Path | None = None, **explicit: Any) -> Connection:
        """Arguments, then environment, then profile, then defaults (see the module docstring)."""
        env = os.environ if environ is None else environ
        chosen, values = _profile(profile or env.get("TDEV_PROFILE") or None,
                                  profiles_file or Path(env.get("TDEV_PROFILES_FILE")
                                                        or Path.home() / ".config" / "tdev" / "profiles.toml"), env)
        for name, variable in _ENV.items():
            if env.get(variable):
                values[name] = env[variable]
        token = next((env[v] for v in _TOKEN_ENV if env.get(v)), None)
        if token:
            values["token"] = token
        values.update({key: value for key, value in explicit.items() if value not in (None, "")})
        return cls._from_values(values, chosen)

    @classmethod
    def _from_values(cls, values: dict[str, Any], profile: str) -> Connection:
        known = {f.name for f in fields(cls)} - {"profile"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConnectionError_(f"unknown connection setting(s) {', '.join(unknown)} in profile {profile!r}; "
                                   f"known: {', '.join(sorted(known))}")
        connection = cls(profile=profile)
        for name in ("ca_file", "cert_file", "key_file"):
            if values.get(name) is not None:
                values[name] = Path(str(values[name])).expanduser()
        if "deadline_seconds" in values:
            try:
                values["deadline_seconds"] = float(values["deadline_seconds"])
            except ValueError:
                raise ConnectionError_(f"deadline_seconds must be a number, not {values['deadline_seconds']!r}") \
                    from None
        return replace(connection, **values)


def _profile(name: str | None, path: Path, env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The settings of the chosen profile; a token may be given indirectly as ``token_env``."""
    if not path.is_file():
        if name:
            raise ConnectionError_(f"profile {name!r} asked for but there is no profiles file at {path} "
                                   "(TDEV_PROFILES_FILE); see docs/clients.md for its format")
        return "", {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConnectionError_(f"profiles file {path} is unreadable: {error}") from None
    chosen = name or ("default" if "default" in document else "")
    if not chosen:
        return "", {}
    if not isinstance(document.get(chosen), dict):
        raise ConnectionError_(f"no profile {chosen!r} in {path}; it has: {', '.join(sorted(document)) or 'none'}")
    values = dict(document[chosen])
    token_env = values.pop("token_env", None)
    if token_env:
        if not env.get(str(token_env)):
            raise ConnectionError_(f"profile {chosen!r} takes its token from ${token_env}, which is not set")
        values["token"] = env[str(token_env)]
    return chosen, values


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConnectionError_(f"cannot read {path}: {error.strerror}") from None
