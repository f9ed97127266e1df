"""PACT Action Authenticate: failed logins are rate limited, tokens are capped per client and
survive a restart; client files hold hashed secrets.

Found: 300 wrong secrets were tried at 619/s and then the right one worked; one client's
10,000 logins evicted every other client's token.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from accounting.pact.clients import PactClients, hash_secret
from accounting.pact.host import PactHost
from accounting.pact.ratelimit import AuthLimiter
from accounting.pact.tokens import TokenStore
from tanji.errors import ConfigError
from tests.api.fake import FakeService

SECRETS = {"acme": "acme-secret-0123456789", "beta": "beta-secret-0123456789"}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _app(clock: Clock, tokens: TokenStore | None = None):
    service = FakeService()
    host = PactHost(service, PactClients.from_secrets(SECRETS), limiter=AuthLimiter(clock=clock), clock=clock)
    if tokens is not None:
        host.tokens = tokens
    return create_app(service, api_token="t", pact=host)


def _login(c: TestClient, client_id: str, secret: str):
    return c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


def test_wrong_secrets_lock_the_client_out_until_the_window_passes() -> None:
    clock = Clock()
    with TestClient(_app(clock), base_url="https://testserver") as c:
        statuses = [_login(c, "acme", f"wrong-{i}").status_code for i in range(300)]
        assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
        # The right secret does not get in while the client is locked out ...
        locked = _login(c, "acme", SECRETS["acme"])
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        # ... other clients are not locked out by it ...
        assert _login(c, "beta", SECRETS["beta"]).status_code == 200
        clock.t += 61
        # ... and once the failures have left the window, the right secret works again.
        assert _login(c, "acme", SECRETS["acme"]).status_code == 200


def test_an_address_spraying_client_ids_is_limited() -> None:
    clock = Clock()
    with TestClient(_app(clock), base_url="https://testserver") as c:
        statuses = [_login(c, f"nobody-{i}", "x" * 20).status_code for i in range(100)]
        assert statuses.count(401) == 30 and statuses.count(429) == 70


def test_one_clients_logins_never_evict_another_clients_token() -> None:
    clock = Clock()
    tokens = TokenStore(clock=clock)
    with TestClient(_app(clock, tokens), base_url="https://testserver") as c:
        beta = _login(c, "beta", SECRETS["beta"]).json()["access_token"]
        statuses = [_login(c, "acme", SECRETS["acme"]).status_code for _ in range(500)]
        assert statuses.count(200) == 60 and statuses.count(429) == 440  # logins per client per minute
        r = c.get("/3/footprints", headers={"Authorization": f"Bearer {beta}"})
        assert r.status_code == 200
    # The store itself: 10,000 tokens for acme leave beta's alone and hold at most 16 of acme's.
    for _ in range(10_000):
        tokens.issue("acme")
    assert tokens.check(beta) == ("ok", "beta")
    assert tokens.count("acme") == tokens.per_client == 16


def test_tokens_survive_a_restart_and_expire_by_wall_clock(tmp_path) -> None:
    clock = Clock()
    first = TokenStore(tmp_path / "tokens.sqlite", clock=clock)
    token = first.issue("acme")
    first.close()
    again = TokenStore(tmp_path / "tokens.sqlite", clock=clock)
    assert again.check(token) == ("ok", "acme")
    clock.t += 3601
    assert again.check(token) == ("expired", "acme")
    assert again.check("never-issued") is None


def test_clients_file_holds_hashes_grants_and_event_targets(tmp_path) -> None:
    (tmp_path / "acme.secret").write_text("our-secret-at-acme\n")
    path = tmp_path / "pact.yaml"
    path.write_text(f"""
public_url: https://pact.plant.example:8443
clients:
  - id: acme
    secret_hash: {hash_secret(SECRETS["acme"], iterations=1000)}
    grants: [cq-battery/ess-5kwh]
    events:
      url: https://pact.acme.example/3/events
      client_id: tanji-cq
      client_secret_file: acme.secret
  - id: beta
    secret_hash: {hash_secret(SECRETS["beta"], iterations=1000)}
""")
    clients = PactClients.from_file(path)
    assert clients.public_url == "https://pact.plant.example:8443"
    assert clients.verify("acme", SECRETS["acme"]).client_id == "acme"
    assert clients.verify("acme", SECRETS["beta"]) is None and clients.verify("nobody", "x") is None
    acme = clients.get("acme")
    assert acme.may_see("cq-battery", "ess-5kwh") and not acme.may_see("cq-battery", "pack-48v-100ah")
    assert clients.get("beta").may_see("any", "thing")
    assert acme.events.auth_url == "https://pact.acme.example"
    assert acme.events.client_secret == "our-secret-at-acme"
    assert acme.events.accepts_source("https://pact.acme.example")
    assert acme.events.accepts_source("//pact.acme.example/3/events")
    assert not acme.events.accepts_source("https://evil.example/3/events")
    assert SECRETS["acme"] not in path.read_text()


@pytest.mark.parametrize(("text", "where"), [
    ("clients:\n  - id: a\n    secret_hash: plain-secret\n", ":3: clients[0].secret_hash"),
    ("clients:\n  - id: a\n    secret_hash: {h}\n    grants: [everything]\n", ":4: clients[0].grants"),
    ("clients:\n  - id: a\n    secret_hash: {h}\n    events: {{url: http://partner.example/3/events, client_id: x, client_secret: y}}\n",
     ":4: clients[0].events.url"),
    ("public_url: http://plant.example\nclients: []\n", ":1: public_url"),
    ("clients:\n  - id: a\n    secret_hash: {h}\n    grant: ['*']\n", ":4: clients[0].grant"),
])
def test_a_bad_clients_file_names_file_line_and_fix(tmp_path, text: str, where: str) -> None:
    path = tmp_path / "pact.yaml"
    path.write_text(text.format(h=hash_secret("s" * 20, iterations=1000)))
    with pytest.raises(ConfigError) as err:
        PactClients.from_file(path)
    assert f"{path}{where}" in str(err.value) and "fix:" in str(err.value)
