"""The PACT partners of a plant: client ids, hashed secrets, what each may see, where events go.

A PACT client is a customer's system that pulls footprints (Action Authenticate, then
ListFootprints / GetFootprint / Events). Production reads them from a YAML file given to
`tanji accounting --pact-clients FILE`; the file holds only a salted PBKDF2 hash of each
secret, so a leaked file does not leak credentials:

    public_url: https://pact.plant.example.com:8443   # optional: the URL partners use
    products:                                          # what the plant declares per product
      cq-battery/pack-48v-100ah:
        classifications: [urn:pact:productclassification:hs:850760]
        exempted_emissions_pct: 97                     # gate-to-gate: share outside electricity
    clients:
      - id: acme-procurement
        secret_hash: pbkdf2-sha256$60000$…$…          # python -m accounting.pact.clients hash
        grants: [cq-battery/pack-48v-100ah]            # site/product, site/* or *
        events:                                        # optional: this partner's Action Events
          url: https://pact.acme.example/3/events
          auth_url: https://pact.acme.example          # default: the origin of url
          client_id: tanji-cq                          # our credentials at the partner
          client_secret_file: /etc/tanji/acme-events.secret
          ca_file: /etc/tanji/acme-ca.pem              # optional, else the system CAs

Grants decide what a client sees: ListFootprints lists only granted footprints, GetFootprint
of another one is 403 AccessDenied. `events.url` is where Published events and answers to a
RequestCreated event go: the target is always this configured URL, never one taken from a
request (an event's `source` must match it), so no one can make the plant post to a URL of
their choosing.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from accounting.pact.document import PactProduct
from tanji.config_file import Section, load_yaml

HASH_SCHEME = "pbkdf2-sha256"
#: PBKDF2 rounds of a new hash: ~30 ms here. Secrets are random (see `new_secret`), so the hash
#: mainly keeps a leaked file useless; failed logins are rate limited before they cost CPU.
HASH_ITERATIONS = 60_000
#: A secret must be at least this long (a generated one is 43 characters).
MIN_SECRET_CHARS = 16


def new_secret() -> str:
    """A random client secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """`pbkdf2-sha256$<iterations>$<salt>$<hash>` of a secret (what the clients file holds)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse_hash(text: str) -> tuple[int, bytes, bytes]:
    scheme, _, rest = text.partition("$")
    parts = rest.split("$")
    if scheme != HASH_SCHEME or len(parts) != 3 or not parts[0].isdigit():
        raise ValueError(f"not a {HASH_SCHEME} hash")
    return int(parts[0]), _unb64(parts[1]), _unb64(parts[2])


@dataclass(frozen=True)
class EventsTarget:
    """A partner's Action Events endpoint and our credentials for its Action Authenticate."""

    url: str
    auth_url: str
    client_id: str
    client_secret: str = field(repr=False)
    ca_file: str | None = None

    def accepts_source(self, source: str) -> bool:
        """Does an event's `source` name this partner? (its events URL, that URL's base, or its
        origin; CloudEvents sources may be scheme-relative `//host/path`)."""
        text = source.strip()
        if text.startswith("//"):
            text = "https:" + text
        wanted = urllib.parse.urlsplit(self.url)
        got = urllib.parse.urlsplit(text)
        if (got.hostname or "").lower() != (wanted.hostname or "").lower() or got.port != wanted.port:
            return False
        path = got.path.rstrip("/")
        base = wanted.path.rstrip("/").removesuffix("/3/events")
        return path in ("", base, base + "/3/events", wanted.path.rstrip("/"))


@dataclass(frozen=True)
class PactClient:
    """One partner: id, secret hash, grants (`site/product`, `site/*`, `*`), events target."""

    client_id: str
    secret_hash: str = field(repr=False)
    grants: tuple[str, ...] = ("*",)
    events: EventsTarget | None = None

    def may_see(self, site_id: str, product_id: str) -> bool:
        return any(g in ("*", f"{site_id}/*", f"{site_id}/{product_id}") for g in self.grants)


class PactClients:
    """The partners of a deployment; verifies secrets in constant time against their hashes."""

    def __init__(self, clients: list[PactClient] | tuple[PactClient, ...] = (), *,
                 public_url: str | None = None,
                 products: dict[tuple[str, str], PactProduct] | None = None) -> None:
        self._clients = {c.client_id: c for c in clients}
        self.public_url = public_url.rstrip("/") if public_url else None
        self.products = dict(products or {})
        self._verified: dict[str, bytes] = {}  # client id -> sha256 of the last good secret
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self):  # noqa: ANN204 - iterator of PactClient
        return iter(self._clients.values())

    def get(self, client_id: str) -> PactClient | None:
        return self._clients.get(client_id)

    def verify(self, client_id: str, secret: str) -> PactClient | None:
        """The client when `secret` is its secret, else None."""
        client = self._clients.get(client_id)
        if client is None:
            return None
        quick = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            known = self._verified.get(client_id)
        if known is not None and hmac.compare_digest(known, quick):
            return client  # the same secret verified before: skip the slow hash
        iterations, salt, expected = _parse_hash(client.secret_hash)
        digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
        if not hmac.compare_digest(digest, expected):
            return None
        with self._lock:
            self._verified[client_id] = quick
        return client

    @classmethod
    def from_secrets(cls, secrets_by_id: dict[str, str], *, public_url: str | None = None,
                     products: dict[tuple[str, str], PactProduct] | None = None,
                     iterations: int = 1_000) -> PactClients:
        """Clients with plain secrets and every grant (the demo, tests)."""
        return cls([PactClient(cid, hash_secret(s, iterations=iterations)) for cid, s in secrets_by_id.items()],
                   public_url=public_url, products=products)

    @classmethod
    def from_file(cls, path: str | Path) -> PactClients:
        """Read a clients file; a mistake raises ConfigError naming file, line and fix."""
        root = load_yaml(path)
        public_url = root.get("public_url", str, None)
        if public_url is not None and urllib.parse.urlsplit(public_url).scheme != "https":
            raise root.error("public_url", f"{public_url!r} is not an https:// URL",
                             "PACT is served over HTTPS only: write https://host:port")
        clients = [_client(s, Path(path).parent) for s in root.sections("clients", [])]
        seen: set[str] = set()
        for section, client in zip(root.sections("clients", []), clients, strict=True):
            if client.client_id in seen:
                raise section.error("id", f"client id {client.client_id!r} is listed twice", "keep one entry per id")
            seen.add(client.client_id)
        products = {}
        if "products" in root:
            section = root.section("products")
            for key in section:
                site_id, sep, product_id = key.partition("/")
                if not sep or not site_id or not product_id:
                    raise section.error(key, f"{key!r} is not site/product", "e.g. cq-battery/pack-48v-100ah:")
                products[(site_id, product_id)] = _product(section.section(key))
        root.reject_unknown(("public_url", "products", "clients"))
        return cls(clients, public_url=public_url, products=products)


def _product(s: Section) -> PactProduct:
    classes = s.get("classifications", list, [])
    for c in classes:
        if not isinstance(c, str) or not c.lower().startswith("urn:"):
            raise s.error("classifications", f"{c!r} is not a URN",
                          "e.g. urn:pact:productclassification:hs:850760 (PACT v3 classification URNs)")
    pct = s.number("exempted_emissions_pct", None, minimum=0, maximum=100)
    s.reject_unknown(("classifications", "exempted_emissions_pct"))
    return PactProduct(tuple(classes), pct)


def _client(s: Section, base: Path) -> PactClient:
    client_id = s.get("id", str)
    if not client_id or len(client_id) > 128 or ":" in client_id:
        raise s.error("id", f"{client_id!r} is not a usable client id",
                      "use 1-128 characters without ':' (HTTP Basic splits on it)")
    secret_hash = s.get("secret_hash", str, fix="hash the secret: python -m accounting.pact.clients hash")
    try:
        _parse_hash(secret_hash)
    except ValueError:
        raise s.error("secret_hash", f"not a {HASH_SCHEME} hash",
                      "make one with: python -m accounting.pact.clients hash (never put the secret itself here)") from None
    grants = s.get("grants", list, ["*"])
    for g in grants:
        if not isinstance(g, str) or not (g == "*" or g.count("/") == 1):
            raise s.error("grants", f"grant {g!r} is not site/product, site/* or *",
                          "e.g. grants: [cq-battery/pack-48v-100ah, js-01/*]")
    events = _events(s.section("events"), base) if "events" in s else None
    s.reject_unknown(("id", "secret_hash", "grants", "events"))
    return PactClient(client_id, secret_hash, tuple(grants), events)


def _events(s: Section, base: Path) -> EventsTarget:
    url = s.get("url", str)
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise s.error("url", f"{url!r} is not an https:// URL",
                      "PACT events go over HTTPS only (plain http is allowed to localhost, for tests)")
    auth_url = s.get("auth_url", str, f"{parts.scheme}://{parts.netloc}")
    if "client_secret_file" in s:
        file = Path(s.get("client_secret_file", str))
        file = file if file.is_absolute() else base / file
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise s.error("client_secret_file", f"cannot read {file}: {exc.strerror}",
                          "check the path and that the tanji user may read it") from None
    else:
        secret = s.get("client_secret", str, fix="add client_secret_file: (a file holding our secret at the partner)")
    ca_file = s.get("ca_file", str, None)
    if ca_file is not None and not Path(ca_file).is_absolute():
        ca_file = str(base / ca_file)
    s.reject_unknown(("url", "auth_url", "client_id", "client_secret", "client_secret_file", "ca_file"))
    return EventsTarget(url, auth_url.rstrip("/"), s.get("client_id", str), secret, ca_file)


def main(argv: list[str] | None = None) -> int:
    """`python -m accounting.pact.clients hash|new`: make a secret hash for a clients file."""
    parser = argparse.ArgumentParser(prog="python -m accounting.pact.clients",
                                     description="Make PACT client secrets and their hashes for a clients file.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="hash a secret read from stdin (or typed at the prompt)")
    sub.add_parser("new", help="print a new random secret and its hash")
    args = parser.parse_args(argv)
    if args.command == "new":
        secret = new_secret()
        print(f"secret:      {secret}\nsecret_hash: {hash_secret(secret)}")
        return 0
    secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if len(secret) < MIN_SECRET_CHARS:
        print(f"a secret needs at least {MIN_SECRET_CHARS} characters; use `new` for a random one",
              file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
