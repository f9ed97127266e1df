"""TLS with a private CA and a per-gateway broker user, on a real Mosquitto."""

from __future__ import annotations

import getpass
import ssl
import subprocess
import time

import pytest

from gateway.service import GatewayService
from tanji.broker_config import hash_password
from tanji.site import Broker
from tests.gateway.conftest import simulated_site
from tests.services import MosquittoServer


def make_certs(d) -> None:
    """A CA and a server certificate for 127.0.0.1, with the openssl command line."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=tanji test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")


@pytest.mark.timeout(60)
def test_tls_and_password_per_gateway(tmp_path, plant_factory, collector_factory):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    (certs / "passwd").write_text(f"gw-1:{hash_password('s3cret-gw')}\nreader:{hash_password('s3cret-r')}\n")
    (certs / "gw-1.password").write_text("s3cret-gw\n")
    broker = MosquittoServer(tmp_path / "mosquitto", allow_anonymous=False, extra_conf=(
        f"cafile {certs}/ca.crt\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
        f"password_file {certs}/passwd\n"
        # pytest's temporary directories are private to the user running the tests.
        f"user {getpass.getuser()}\n"))
    broker.start()
    try:
        _, site = simulated_site(tmp_path, broker.port)
        plant_factory(site)
        # One broker section for every gateway of the site: {gateway} is the gateway id.
        site = site.with_broker(Broker(host="127.0.0.1", port=broker.port, tls=True, ca_file=str(certs / "ca.crt"),
                                       username="{gateway}", password_file=str(certs / "{gateway}.password")))

        def reader(client) -> None:
            client.tls_set(ca_certs=str(certs / "ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            client.username_pw_set("reader", "s3cret-r")
        collector = collector_factory("127.0.0.1", broker.port, setup=reader)
        service = GatewayService(site, spool_path=tmp_path / "spool.sqlite")
        service.start()
        try:
            collector.wait_for(lambda: len(collector.unique()) == 3)
            assert service.health()["connected"]
        finally:
            service.stop()
        # A wrong password: the broker refuses, the gateway keeps spooling.
        (certs / "gw-1.password").write_text("wrong\n")
        service = GatewayService(site, spool_path=tmp_path / "spool2.sqlite")
        service.start()
        try:
            time.sleep(2)
            health = service.health()
            assert not health["connected"] and health["spool_depth"] > 0 and health["polls"] > 0
        finally:
            service.stop()
    finally:
        broker.stop()
