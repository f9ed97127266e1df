"""The integrator's path of docs/deploy.md, command for command, on one machine.

Every shell command below is a line of docs/deploy.md (the test checks that it is there,
verbatim) and runs as the page says, with four mechanical changes because it runs as a test:
`/etc/...` and `/var/lib/...` are directories under pytest's temporary directory, the broker and
the HTTPS port are free ports on 127.0.0.1 (the certificates name 127.0.0.1 too), `-o tanji`
and `chown` are dropped (one user runs everything), and `tanji` is this checkout's. The two
services run exactly as their systemd units' ExecStart say; accounting gets a NOTIFY_SOCKET,
as systemd gives a Type=notify unit. The meters are `tanji simulate` serving the shipped site's
plant (on free ports), the broker is Debian's Mosquitto with the generated config.

Proven: accounting serves HTTPS, tells systemd READY=1 exactly when /api/v1/ready turns 200,
refuses a placeholder token; the gateway from the shipped site file delivers readings; a
certificate is registered with the API token; a PACT partner logs in and lists footprints;
reads need the read token; `tanji gateway status` and `tanji accounting status` exit 0.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.services import free_port, require_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
SHIPPED_SITE = REPO / "firmware-config" / "sites" / "cq-battery.yaml"
UNITS = REPO / "firmware-config" / "systemd"
TIMEOUT_S = 180


def doc_line(line: str) -> str:
    """A command of docs/deploy.md, checked to be there verbatim."""
    assert line in DEPLOY, f"docs/deploy.md no longer shows: {line}"
    return line


def unit_exec_start(name: str) -> str:
    text = (UNITS / name).read_text()
    command = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, flags=re.M | re.S).group(1)
    return " ".join(command.replace("\\\n", " ").split())


class Machine:
    """The test's stand-in for the hosts: path and address mapping, processes, logs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.broker_port = free_port()
        self.procs: list[subprocess.Popen] = []
        for d in ("etc/tanji/secrets", "etc/mosquitto", "var/lib/tanji", "var/lib/mosquitto"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        (tmp / "bin").mkdir()
        tanji = tmp / "bin" / "tanji"  # `tanji` on the PATH is this checkout's
        tanji.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tanji \"$@\"\n")
        tanji.chmod(0o755)

    def map(self, command: str) -> str:
        out = command.replace("/opt/tanji/venv/bin/tanji", "tanji")
        out = out.replace("/opt/tanji/venv/bin/python", shlex.quote(sys.executable))
        out = out.replace("docker/make-certs.sh", shlex.quote(str(REPO / "docker" / "make-certs.sh")))
        for root in ("/etc/", "/var/lib/"):
            out = re.sub(rf"(?<![\w.]){re.escape(root)}", f"{self.tmp}{root}", out)
        out = out.replace(" -o tanji", "")
        return out

    def sh(self, command: str) -> str:
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, env=self.env,
                                timeout=120)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def run_doc(self, line: str, extra: str = "") -> str:
        return self.sh(self.map(doc_line(line)) + extra)

    def start(self, command: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=REPO, env={**self.env, **(env or {})}, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def wait_for(predicate, what: str, timeout_s: float = TIMEOUT_S):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(600)
def test_the_integrators_path(tmp_path):
    m = Machine(tmp_path)
    etc = tmp_path / "etc"
    try:
        _path(m, etc)
    finally:
        m.stop_all()


def _path(m: Machine, etc: Path) -> None:
    # §1: the site file every host reads, checked where it is deployed. The edge box's copy names
    # the gateway's broker user (§4); the plant's meters are simulated on free ports.
    site = yaml.safe_load(SHIPPED_SITE.read_text())
    ports: dict[int, int] = {}
    for meter in site["gateways"][0]["meters"]:
        if "port" in meter:
            meter["port"] = ports.setdefault(meter["port"], free_port())
    site["gateways"][0]["spool_path"] = f"{etc.parent}/var/lib/tanji/spool-gw-cq-01.sqlite"
    broker_block = re.search(r"```yaml\n(broker: \{host: broker\.plant\.example.*?)```", DEPLOY, flags=re.S).group(1)
    site["broker"] = yaml.safe_load(m.map(broker_block).replace("broker.plant.example", "127.0.0.1")
                                    .replace("port: 8883", f"port: {m.broker_port}"))["broker"]
    (etc / "tanji" / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False, allow_unicode=True))
    assert "site cq-battery OK" in m.run_doc("tanji check /etc/tanji/site.yaml")

    # §2: the broker.
    m.run_doc("docker/make-certs.sh /etc/mosquitto/certs broker.plant.example")
    m.run_doc("tanji broker-config /etc/tanji/site.yaml --out /etc/mosquitto/tanji --certs-dir /etc/mosquitto/certs "
              "--data-dir /var/lib/mosquitto",
              # pytest's temporary directories are private to the user running the tests
              extra=f" --port {m.broker_port} --bind 127.0.0.1 --run-as {getpass.getuser()}")
    conf = m.map(doc_line("/usr/sbin/mosquitto -c /etc/mosquitto/tanji/mosquitto.conf"))
    m.start(conf.replace("/usr/sbin/mosquitto", require_binary("mosquitto", "mosquitto")), "mosquitto.log")
    wait_for(lambda: _listening(m.broker_port), "Mosquitto")

    # §3: the central host's secrets, PACT client, and the service as its unit runs it.
    m.run_doc("install -m 0600 -o tanji /etc/mosquitto/tanji/secrets/tanji-accounting.password /etc/tanji/secrets/")
    m.run_doc("install -m 0644 /etc/mosquitto/certs/ca.crt /etc/tanji/ca.crt")
    (etc / "tanji" / "secrets" / "api-token").write_text("change-me-api-token\n")  # as if copied from an example
    m.run_doc("python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > /etc/tanji/secrets/read-token")
    m.run_doc("docker/make-certs.sh /etc/tanji/tls central.plant.example")
    new = m.run_doc("/opt/tanji/venv/bin/python -m accounting.pact.clients new")
    secret = re.search(r"secret: +(\S+)", new).group(1)
    secret_hash = re.search(r"secret_hash: +(\S+)", new).group(1)
    clients = re.search(r"```yaml\n(clients:\n.*?)```", DEPLOY, flags=re.S).group(1)
    (etc / "tanji" / "pact-clients.yaml").write_text(clients.replace("pbkdf2-sha256$60000$…", secret_hash))

    unit_command = unit_exec_start("tanji-accounting.service")
    assert unit_command.replace("/opt/tanji/venv/bin/tanji", "tanji") in " ".join(DEPLOY.replace("\\\n", " ").split()), \
        "docs/deploy.md §3 shows the accounting unit's ExecStart"
    accounting = m.map(unit_command).replace("--http-host 0.0.0.0", "--http-host 127.0.0.1")
    accounting = accounting.replace("--http-port 8443", "--http-port 0")  # the log names the port
    # A placeholder token is refused before anything starts.
    refused = subprocess.run(["bash", "-c", accounting], capture_output=True, text=True, cwd=REPO, env=m.env,
                             timeout=120)
    assert refused.returncode == 2 and "is still the placeholder 'change-me-api-token'" in refused.stderr
    m.run_doc("python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > /etc/tanji/secrets/api-token")
    api_token = (etc / "tanji" / "secrets" / "api-token").read_text().strip()
    read_token = (etc / "tanji" / "secrets" / "read-token").read_text().strip()

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(m.tmp / "notify.sock"))
    notify.settimeout(0.1)
    accounting_proc = m.start(accounting, "accounting.log", env={"NOTIFY_SOCKET": str(m.tmp / "notify.sock")})
    log = m.tmp / "accounting.log"
    base = wait_for(lambda: (f := re.search(r"serving dashboard (https://\S+)/\n", log.read_text())) and f.group(1),
                    "accounting's URLs in its log")
    port = base.rsplit(":", 1)[1]

    def curl(args: str) -> str:
        mapped = m.map(args).replace("central.plant.example:8443", f"127.0.0.1:{port}")
        return m.sh(f"curl -sS {mapped}")

    ready_seen: list[bool] = []

    def notified() -> bool:
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            return False
        if "READY=1" in message:
            # systemd hears READY=1 exactly when /api/v1/ready says 200
            ready_seen.append(json.loads(curl("--cacert /etc/tanji/tls/ca.crt "
                                              "https://central.plant.example:8443/api/v1/ready"))["ready"])
            return True
        return False

    assert json.loads(curl("--cacert /etc/tanji/tls/ca.crt https://central.plant.example:8443/api/v1/health"))[
        "status"] == "ok"
    wait_for(notified, "READY=1 on the notify socket")
    assert ready_seen == [True]
    status_line = "tanji accounting status --url https://central.plant.example:8443 --ca-file /etc/tanji/tls/ca.crt"
    status = m.sh(m.map(doc_line(status_line)).replace("central.plant.example:8443", f"127.0.0.1:{port}"))
    assert status.startswith("ready (")

    # §4: the edge box, its unit's ExecStart, the plant its meters are.
    m.run_doc("install -m 0600 -o tanji /etc/mosquitto/tanji/secrets/gw-cq-01.password /etc/tanji/secrets/")
    plant_site = etc / "tanji" / "site.yaml"
    m.start(f"tanji simulate {shlex.quote(str(plant_site))}", "simulate.log")
    wait_for(lambda: all(_listening(p) for p in ports.values()), "the simulated meters")
    gateway = m.map(unit_exec_start("tanji-gateway.service"))
    assert doc_line("`tanji gateway --config /etc/tanji/site.yaml`")
    gateway_proc = m.start(gateway, "gateway.log")
    gateway_status = m.map(doc_line("tanji gateway status --config /etc/tanji/site.yaml"))
    wait_for(lambda: subprocess.run(["bash", "-c", gateway_status], capture_output=True, env=m.env,
                                    cwd=REPO).returncode == 0, "`tanji gateway status` exit 0")

    # Reads need the read token; readings arrive.
    meters_url = "https://central.plant.example:8443/api/v1/meters"
    assert "read token" in curl(f"--cacert /etc/tanji/tls/ca.crt {meters_url}")
    wait_for(lambda: sum(x["readings"] for x in json.loads(curl(
        f"--cacert /etc/tanji/tls/ca.crt -u ':{read_token}' {meters_url}"))) > 0, "readings at accounting")

    # §5: a certificate registered with the API token; a PACT partner logs in and pulls footprints.
    cert_line = doc_line(
        "curl --cacert /etc/tanji/tls/ca.crt -H \"Authorization: Bearer $(cat /etc/tanji/secrets/api-token)\" "
        "-H 'Content-Type: application/json' -d '{\"serial\": \"GEC-2025-000001\", \"site_id\": \"cq-battery\", "
        "\"generation_month\": \"2025-01\", \"technology\": \"wind_onshore\", \"province\": \"Sichuan\"}' "
        "https://central.plant.example:8443/api/v1/certificates")
    registered = json.loads(curl(cert_line.removeprefix("curl ")))
    assert registered["serial"] == "GEC-2025-000001" and registered["site_id"] == "cq-battery", registered
    listed = json.loads(curl(f"--cacert /etc/tanji/tls/ca.crt -H 'Authorization: Bearer {api_token}' "
                             "https://central.plant.example:8443/api/v1/certificates"))
    assert [c["serial"] for c in listed] == ["GEC-2025-000001"]
    login_line = doc_line("curl --cacert /etc/tanji/tls/ca.crt -u 'acme-procurement:<secret>' "
                          "-d grant_type=client_credentials https://central.plant.example:8443/auth/token")
    token = json.loads(curl(login_line.removeprefix("curl ").replace("<secret>", secret)))
    assert token["token_type"] == "Bearer", token
    footprints = json.loads(curl(f"--cacert /etc/tanji/tls/ca.crt -H 'Authorization: Bearer {token['access_token']}' "
                                 "https://central.plant.example:8443/3/footprints"))
    assert "data" in footprints, footprints
    assert json.loads(curl("--cacert /etc/tanji/tls/ca.crt https://central.plant.example:8443/api/v1/ready"))["ready"]

    # systemd stops both with SIGTERM (KillSignal=): each finishes cleanly, exit 0.
    for proc in (gateway_proc, accounting_proc):
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    notify.settimeout(5)
    messages = []
    while not any("STOPPING=1" in x for x in messages):
        messages.append(notify.recv(4096).decode())
    notify.close()
    assert not any(x.startswith("STATUS=not ready") for x in messages), "readiness flapped: " + repr(messages)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
