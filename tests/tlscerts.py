"""Test certificates, made at test time with the openssl command: never a
committed key. One call makes the whole set in a directory:

  ca.pem/ca.key          the test CA
  server.pem/server.key  server for 127.0.0.1, ::1 and localhost, by ca
  server2.pem/.key       a second such server pair (reload tests)
  client.pem/.key        client certificate, CN=alice, by ca
  client2.pem/.key       client certificate, CN=bob, by ca
  expired.pem/.key       server for 127.0.0.1 and localhost, expired, by ca
  other.pem/.key         server for other.example only, by ca
  rogue-ca.pem           a CA nobody trusts, and
  rogue.pem/.key         a server for 127.0.0.1 and localhost signed by it,
  rogue-client.pem/.key  and a client (CN=mallory) signed by it
  cn-localhost.pem/.key  server with CN=localhost but only IP:127.0.0.1 in
                         subjectAltName, by ca (a name must not match it)
  two-cn.pem/.key        client whose subject is CN=alice, CN=bob, by ca

Keys are ECDSA P-256: quick to make, and what a current deployment uses.
Run as a program, `python3 tests/tlscerts.py DIR` makes the set in DIR
(created if missing) and lists it.
"""

import os
import subprocess
import sys

SERVER_SAN = "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _key_csr(d, name, cn):
    p = os.path.join(d, name)
    openssl("req", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + cn,
            "-keyout", p + ".key", "-out", p + ".csr")
    return p


def _ca(d, name, cn):
    p = os.path.join(d, name)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=" + cn, "-keyout", p + ".key", "-out", p + ".pem")
    return p


def _sign(d, name, cn, ca, ext, days="2"):
    p = _key_csr(d, name, cn)
    extfile = p + ".ext"
    with open(extfile, "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", p + ".csr", "-CA", ca + ".pem",
            "-CAkey", ca + ".key", "-CAcreateserial", "-days", days,
            "-extfile", extfile, "-out", p + ".pem")
    os.unlink(p + ".csr")
    os.unlink(extfile)
    return p


def make(d):
    """Make the set above in directory d; returns d."""
    ca = _ca(d, "ca", "forkloop test CA")
    rogue = _ca(d, "rogue-ca", "forkloop rogue CA")
    _sign(d, "server", "forkloop test server", ca, SERVER_SAN)
    _sign(d, "server2", "forkloop test server 2", ca, SERVER_SAN)
    client_ext = "extendedKeyUsage=clientAuth\n"
    _sign(d, "client", "alice", ca, client_ext)
    _sign(d, "client2", "bob", ca, client_ext)
    # -days -1: valid until a day before it was made (OpenSSL 3.0's x509
    # takes a negative count and sets notAfter in the past).
    _sign(d, "expired", "forkloop expired server", ca, SERVER_SAN, "-1")
    _sign(d, "other", "other.example", ca,
          "subjectAltName=DNS:other.example\n")
    _sign(d, "rogue", "forkloop rogue server", rogue, SERVER_SAN)
    _sign(d, "rogue-client", "mallory", rogue, client_ext)
    _sign(d, "cn-localhost", "localhost", ca,
          "subjectAltName=IP:127.0.0.1\n")
    _sign(d, "two-cn", "alice/CN=bob", ca, client_ext)
    return d


def path(d, name):
    """Path of name ("server.pem", "ca.pem"...) in a directory make filled."""
    return os.path.join(d, name)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 tests/tlscerts.py DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    make(sys.argv[1])
    print("\n".join(sorted(f for f in os.listdir(sys.argv[1])
                           if f.endswith((".pem", ".key")))))
