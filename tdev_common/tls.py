"""TLS material from the settings (PEM files, or one JSON document of PEM strings) and the mTLS policy.

Policy, one place (docs/deploy.md section 4 says the same):

- no certificate: plaintext (loopback development, or a mesh whose only guard is its security groups);
- a certificate: the server speaks TLS; a client CA as well: it asks every client for a certificate signed by
  that CA and, with ``tls_require_client_auth`` (the default), refuses a client without one at the handshake;
- production mode with a certificate must also have a client CA and require client certificates: inside the
  mesh TLS is there so that only mesh members connect, and a TLS server any client can reach anonymously is a
  misconfiguration worth refusing to start over;
- ``tls_required`` (the task definitions set it) refuses to start without that full mTLS set at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tdev_common.config import CommonSettings

# Keys of the TDEV_TLS_PEM document, each standing for the file setting of the same name.
PEM_KEYS = ("cert", "key", "ca", "client_ca", "client_cert", "client_key")


class TlsConfigError(ValueError):
    """The TLS settings are incomplete, unreadable or weaker than the mode demands (no key material in the text)."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes a process serves and calls with; every field optional, see the module docstring."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    client_ca: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    require_client_auth: bool = True

    @property
    def mutual(self) -> bool:
        """True when the server verifies client certificates."""
        return self.cert is not None and self.client_ca is not None


def _document(common: CommonSettings) -> dict[str, bytes]:
    if common.tls_pem is None or not common.tls_pem.get_secret_value().strip():
        return {}
    try:
        parsed = json.loads(common.tls_pem.get_secret_value())
    except ValueError:
        raise TlsConfigError("TDEV_TLS_PEM must be a JSON object of PEM strings") from None
    if not isinstance(parsed, dict):
        raise TlsConfigError("TDEV_TLS_PEM must be a JSON object of PEM strings")
    unknown = sorted(set(parsed) - set(PEM_KEYS))
    if unknown:
        raise TlsConfigError(f"TDEV_TLS_PEM has unknown keys {unknown}; expected some of {list(PEM_KEYS)}")
    found: dict[str, bytes] = {}
    for name, value in parsed.items():
        if not isinstance(value, str):
            raise TlsConfigError(f"TDEV_TLS_PEM[{name!r}] must be a PEM string")
        if value.strip():  # an empty entry is a placeholder, the same as no entry
            found[name] = value.encode()
    return found


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{setting}: cannot read {path}: {error.strerror}") from None


def load_tls(common: CommonSettings) -> TlsMaterial:
    """The TLS material the settings name, checked against the policy of the module docstring.

    A file setting wins over the same entry of ``TDEV_TLS_PEM``. The client certificate defaults to the
    server certificate: one certificate per service, valid for serverAuth and clientAuth, is what
    ``scripts/make-certs`` issues and what the deployment stores.

    Raises:
        TlsConfigError: a certificate without its key (or the reverse), an unreadable file, a malformed
        document, or less than mTLS where production mode or ``tls_required`` demands it.
    """
    document = _document(common)
    material = {
        "cert": _read(common.tls_cert_file, "TDEV_TLS_CERT_FILE") or document.get("cert"),
        "key": _read(common.tls_key_file, "TDEV_TLS_KEY_FILE") or document.get("key"),
        "ca": _read(common.tls_ca_file, "TDEV_TLS_CA_FILE") or document.get("ca"),
        "client_ca": _read(common.tls_client_ca_file, "TDEV_TLS_CLIENT_CA_FILE") or document.get("client_ca"),
        "client_cert": _read(common.tls_client_cert_file, "TDEV_TLS_CLIENT_CERT_FILE") or document.get("client_cert"),
        "client_key": _read(common.tls_client_key_file, "TDEV_TLS_CLIENT_KEY_FILE") or document.get("client_key"),
    }
    for cert, key in (("cert", "key"), ("client_cert", "client_key")):
        if (material[cert] is None) != (material[key] is None):
            raise TlsConfigError(f"TLS {cert.replace('_', ' ')} and {key.replace('_', ' ')} go together: "
                                 "one is set without the other")
    if material["client_ca"] is not None and material["cert"] is None:
        raise TlsConfigError("a client CA (mTLS) needs the server's own certificate and key (TDEV_TLS_CERT_FILE)")
    if material["client_cert"] is None:
        material["client_cert"], material["client_key"] = material["cert"], material["key"]
    tls = TlsMaterial(**material, require_client_auth=common.tls_require_client_auth)
    strict = common.mode == "production" and tls.cert is not None
    if (strict or common.tls_required) and not (tls.mutual and tls.require_client_auth and tls.ca is not None):
        reason = "TDEV_TLS_REQUIRED is set" if common.tls_required else "production mode serves TLS"
        raise TlsConfigError(
            f"refusing to start: {reason}, so this process needs its certificate and key, the CA to verify the "
            "others (TDEV_TLS_CA_FILE) and a client CA with client certificates required "
            "(TDEV_TLS_CLIENT_CA_FILE, TDEV_TLS_REQUIRE_CLIENT_AUTH=true), as files or in TDEV_TLS_PEM"
        )
    return tls
