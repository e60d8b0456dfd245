"""The ETSI GS QKD 014 client against a small mock KME on 127.0.0.1 (plain HTTP and mTLS)."""

import base64
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import qkd
from qkd.etsi import Client, Key

KEYS = {}


class MockKme(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body):
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        parts = self.path.split("/")
        if self.path.endswith("/status") and parts[4] == "SAE_B":
            self._send(200, {"source_KME_ID": "KME_A", "target_KME_ID": "KME_B",
                             "master_SAE_ID": "SAE_A", "slave_SAE_ID": "SAE_B",
                             "key_size": 256, "stored_key_count": 10,
                             "max_key_count": 100, "max_key_per_request": 8,
                             "max_key_size": 1024, "min_key_size": 64,
                             "max_SAE_ID_count": 0})
        else:
            self._send(401, {"message": "unauthorized", "details": [{"sae": parts[4]}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        sae = self.path.split("/")[4]
        if self.path.endswith("/enc_keys"):
            if body["number"] > 8:
                return self._send(400, {"message": "too many keys"})
            out = []
            for i in range(body["number"]):
                kid = str(uuid.uuid4())
                key = bytes((i + j) % 256 for j in range(body.get("size", 256) // 8))
                KEYS[kid] = key
                out.append({"key_ID": kid, "key": base64.b64encode(key).decode()})
            self._send(200, {"keys": out})
        elif self.path.endswith("/dec_keys") and sae == "SAE_A":
            ids = [k["key_ID"] for k in body["key_IDs"]]
            if any(i not in KEYS for i in ids):
                return self._send(400, {"message": "key not found"})
            self._send(200, {"keys": [{"key_ID": i, "key": base64.b64encode(KEYS[i]).decode()}
                                      for i in ids]})
        else:
            self._send(503, {"message": "unavailable"})


@pytest.fixture
def http_kme():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), MockKme)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_enc_dec_status_over_http(http_kme):
    c = Client(http_kme, None, None, None, timeout=5)
    st = c.status("SAE_B")
    assert st["key_size"] == 256
    keys = c.enc_keys("SAE_B", number=2, size=128)
    assert len(keys) == 2 and all(isinstance(k, Key) and len(k.key) == 16 for k in keys)
    assert keys[1].key == bytes(range(1, 17))
    assert "bits=128" in repr(keys[0]) and "key=" not in repr(keys[0])
    again = c.dec_keys("SAE_A", [k.key_id for k in keys])
    assert [k.key for k in again] == [k.key for k in keys]


def test_kme_errors_raise_etsi_error(http_kme):
    c = Client(http_kme, None, None, None, timeout=5)
    with pytest.raises(qkd.EtsiError) as e:
        c.status("SAE_X")
    assert e.value.status == 401 and e.value.message == "unauthorized"
    assert e.value.details == [{"sae": "SAE_X"}]
    with pytest.raises(qkd.EtsiError, match="too many keys") as e:
        c.enc_keys("SAE_B", number=9)
    assert e.value.status == 400
    with pytest.raises(qkd.EtsiError, match="key not found"):
        c.dec_keys("SAE_A", [str(uuid.uuid4())])
    with pytest.raises(qkd.EtsiError) as e:
        c.dec_keys("SAE_Z", ["x"])
    assert e.value.status == 503


def test_client_bad_input(http_kme):
    with pytest.raises(qkd.InputError, match="not an absolute"):
        Client("ftp://x", None, None, None)
    with pytest.raises(qkd.InputError, match="needs cert, key and ca"):
        Client("https://127.0.0.1:1", None, None, None)
    with pytest.raises(qkd.InputError, match="plain http"):
        Client(http_kme, "c.pem", "k.pem", "ca.pem")
    with pytest.raises(TypeError):
        Client(None, None, None, None)
    c = Client(http_kme, None, None, None)
    with pytest.raises(qkd.InputError, match="number"):
        c.enc_keys("SAE_B", number=0)
    with pytest.raises(qkd.InputError, match="size"):
        c.enc_keys("SAE_B", size=-8)
    with pytest.raises(qkd.InputError, match="key_ids"):
        c.dec_keys("SAE_A", "not-a-list")
    with pytest.raises(qkd.InputError, match="SAE ID"):
        c.status("")
    with pytest.raises(qkd.InputError, match="SAE ID"):
        c.status(None)


def test_unreachable_kme():
    c = Client("http://127.0.0.1:9", None, None, None, timeout=2)
    with pytest.raises(qkd.EtsiError, match="cannot reach KME") as e:
        c.status("SAE_B")
    assert e.value.status is None


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=d)
    for name, ext in [("kme", "subjectAltName=IP:127.0.0.1"), ("sae", "extendedKeyUsage=clientAuth")]:
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name.upper()}_A",
                 cwd=d)
        (tmp_path / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
                 cwd=d)
    return tmp_path


def test_mutual_tls(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "kme.pem", pki / "kme.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = ThreadingHTTPServer(("127.0.0.1", 0), MockKme)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    try:
        c = Client(url, str(pki / "sae.pem"), str(pki / "sae.key"), str(pki / "ca.pem"), timeout=5)
        keys = c.enc_keys("SAE_B", number=1, size=256)
        assert len(keys[0].key) == 32
        # A client whose CA does not know the KME's certificate refuses to talk.
        bad = Client(url, str(pki / "sae.pem"), str(pki / "sae.key"), str(pki / "sae.pem"),
                     timeout=5)
        with pytest.raises(qkd.EtsiError, match="cannot reach KME"):
            bad.status("SAE_B")
    finally:
        srv.shutdown()
        srv.server_close()
