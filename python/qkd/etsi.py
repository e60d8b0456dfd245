"""ETSI GS QKD 014 V1.1.1 client: get keys from a KME over HTTPS with mutual TLS.

Pure Python (``ssl`` and ``urllib``). The SAE authenticates with its client certificate and
checks the KME against the CA bundle::

    from qkd.etsi import Client
    kme = Client("https://kme-a.example:8443", cert="sae_a.pem", key="sae_a.key", ca="ca.pem")
    keys = kme.enc_keys("SAE_B", number=2, size=256)      # master SAE
    same = other_kme.dec_keys("SAE_A", [k.key_id for k in keys])  # slave SAE

Routes (ETSI GS QKD 014 §5): ``GET {url}/api/v1/keys/{slave}/status``,
``POST {url}/api/v1/keys/{slave}/enc_keys``, ``POST {url}/api/v1/keys/{master}/dec_keys``.
An answer other than 200 raises :class:`qkd.errors.EtsiError` with the status code and the
standard's Error object (``message``, ``details``).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import EtsiError, InputError

__all__ = ["Client", "Key", "EtsiError"]


@dataclass(frozen=True)
class Key:
    """One key from the KME: its UUID and its bytes. ``repr`` shows the length, not the key."""

    key_id: str
    key: bytes = field(repr=False)
    extension: dict[str, Any] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id!r}, bits={8 * len(self.key)})"


class Client:
    """An SAE's connection to its KME (ETSI GS QKD 014).

    Args:
        url: the KME's base URL, e.g. ``https://kme-a:8443`` (the client appends
            ``/api/v1/keys/...``).
        cert: PEM file with the SAE's client certificate (chain).
        key: PEM file with the certificate's private key.
        ca: PEM file with the CA certificate(s) that issued the KME's server certificate.
        timeout: seconds per request.
        check_hostname: verify that the KME certificate names the host in ``url`` (default
            True; turn off only for test setups that connect by IP address).

    An ``http://`` URL (no TLS) is accepted only when cert, key and ca are all None: for tests
    against a local mock, never for real keys.
    """

    def __init__(
        self,
        url: str,
        cert: str | None,
        key: str | None,
        ca: str | None,
        *,
        timeout: float = 10.0,
        check_hostname: bool = True,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url: expected str, got {type(url).__name__}")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise InputError(f"url {url!r} is not an absolute https:// URL")
        if timeout <= 0:
            raise InputError(f"timeout = {timeout}; expected > 0 seconds")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._context: ssl.SSLContext | None
        if parsed.scheme == "https":
            if cert is None or key is None or ca is None:
                raise InputError("https needs cert, key and ca (mutual TLS); got None")
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = check_hostname
            ctx.load_cert_chain(certfile=cert, keyfile=key)
            self._context = ctx
        else:
            if cert is not None or key is not None or ca is not None:
                raise InputError(
                    f"url {url!r} is plain http; certificates are used with https:// only"
                )
            self._context = None

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    # -- ETSI 014 operations -------------------------------------------------------------------

    def status(self, slave_sae_id: str) -> dict[str, Any]:
        """``Get status``: the KME's Status object for keys shared with ``slave_sae_id``
        (source/target KME IDs, key_size, stored_key_count, max_key_per_request, ...)."""
        return self._request("GET", f"{_sae(slave_sae_id)}/status")

    def enc_keys(
        self,
        slave_sae_id: str,
        number: int = 1,
        size: int | None = None,
        *,
        additional_slave_sae_ids: Sequence[str] | None = None,
        extension_mandatory: Sequence[dict[str, Any]] | None = None,
        extension_optional: Sequence[dict[str, Any]] | None = None,
    ) -> list[Key]:
        """``Get key`` (master SAE): ``number`` new keys of ``size`` bits (the KME default
        when None) shared with ``slave_sae_id``. Returns the keys with their IDs; give the IDs
        to the slave SAE, which calls :meth:`dec_keys`."""
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise InputError(f"number = {number!r}; expected an integer >= 1")
        if size is not None and (
            not isinstance(size, int) or isinstance(size, bool) or size < 1
        ):
            raise InputError(f"size = {size!r}; expected an integer >= 1 (bits) or None")
        body: dict[str, Any] = {"number": number}
        if size is not None:
            body["size"] = size
        if additional_slave_sae_ids:
            body["additional_slave_SAE_IDs"] = [str(s) for s in additional_slave_sae_ids]
        if extension_mandatory:
            body["extension_mandatory"] = list(extension_mandatory)
        if extension_optional:
            body["extension_optional"] = list(extension_optional)
        return _keys(self._request("POST", f"{_sae(slave_sae_id)}/enc_keys", body))

    def dec_keys(self, master_sae_id: str, key_ids: Sequence[str]) -> list[Key]:
        """``Get key with key IDs`` (slave SAE): the keys with these IDs that
        ``master_sae_id`` obtained with :meth:`enc_keys`."""
        if isinstance(key_ids, str) or not isinstance(key_ids, Sequence) or not key_ids:
            raise InputError("key_ids: expected a non-empty list of key ID strings")
        body = {"key_IDs": [{"key_ID": str(k)} for k in key_ids]}
        return _keys(self._request("POST", f"{_sae(master_sae_id)}/dec_keys", body))

    # -- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1/keys/{path}",
            data=data,
            method=method,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw) if raw else {}
            except ValueError:
                err = {"message": raw.decode(errors="replace")}
            if not isinstance(err, dict):
                err = {"message": str(err)}
            raise EtsiError(e.code, err.get("message", e.reason), err.get("details")) from None
        except urllib.error.URLError as e:
            raise EtsiError(None, f"cannot reach KME at {self.url}: {e.reason}") from None
        try:
            return json.loads(payload)
        except ValueError:
            raise EtsiError(200, "KME answered with a body that is not JSON") from None


def _sae(sae_id: str) -> str:
    if not isinstance(sae_id, str) or not sae_id:
        raise InputError(f"SAE ID {sae_id!r}: expected a non-empty string")
    return urllib.parse.quote(sae_id, safe="")


def _keys(container: Any) -> list[Key]:
    """Key container (ETSI 014 §6.3) to keys."""
    try:
        items = container["keys"]
        out = []
        for item in items:
            out.append(
                Key(
                    key_id=str(item["key_ID"]),
                    key=base64.b64decode(item["key"], validate=True),
                    extension=item.get("key_ID_extension") or item.get("key_extension"),
                )
            )
        return out
    except (KeyError, TypeError, ValueError) as e:
        raise EtsiError(200, f"malformed key container from KME: {e!r}") from None
