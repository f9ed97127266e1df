"""Gateway keys: made 0600 and never overwritten, refused when others can read them, registered
in the site file with their lifecycle; every mistake in the site file names its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.signing_key import generate_key, load_key, load_or_generate
from tanji.errors import ConfigError
from tanji.site import load_site, parse_site_text

REPO = Path(__file__).resolve().parents[2]
SITE = (REPO / "firmware-config" / "sites" / "cq-battery.yaml").read_text()


def test_key_file_is_private_and_never_overwritten(tmp_path):
    key = generate_key(tmp_path / "k" / "gw.key")
    assert os.stat(key.path).st_mode & 0o777 == 0o600
    assert load_key(key.path).key_id == key.key_id
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(key.path)
    again, made = load_or_generate(key.path)
    assert not made and again.public_raw == key.public_raw


def test_a_key_others_can_read_is_refused(tmp_path):
    key = generate_key(tmp_path / "gw.key")
    os.chmod(key.path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(key.path)


def test_a_file_that_is_not_an_ed25519_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    path = tmp_path / "ec.key"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_key(path)
    (tmp_path / "junk.key").write_text("hello")
    os.chmod(tmp_path / "junk.key", 0o600)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_key(tmp_path / "junk.key")


def site_with(keys_by_gateway: dict[str, list[dict]], **site_keys) -> str:
    doc = yaml.safe_load(SITE)
    doc["site"].update(site_keys)
    for g in doc["gateways"]:
        if g["id"] in keys_by_gateway:
            g["keys"] = keys_by_gateway[g["id"]]
    return yaml.safe_dump(doc, sort_keys=False)


def test_registered_keys_and_their_lifecycle(tmp_path):
    a, b = generate_key(tmp_path / "a.key"), generate_key(tmp_path / "b.key")
    site = parse_site_text(site_with({"gw-cq-01": [
        {"public_key": a.public_key, "valid_until": "2026-07-01T00:00:00Z", "note": "first key"},
        {"public_key": b.public_key, "valid_from": "2026-07-01"}]}, signatures="required"))
    assert site.signatures == "required"
    old, new = site.gateways[0].keys
    assert (old.key_id, new.key_id) == (a.key_id, b.key_id)
    assert old.valid_until_ms == 1782864000000  # 2026-07-01T00:00Z
    assert new.valid_from_ms == 1782835200000  # a date is midnight in the site's time zone (+08:00)
    assert old.refusal(1782863999000, 1782863999999) is None
    assert old.refusal(1782863999000, 1782864000000)[0] == "key_expired"
    assert new.refusal(1782835199999, 1782835200000)[0] == "key_expired"


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("keys, problem, needle", [
    ([{"public_key": "not base64!"}], "is not base64", "not base64!"),
    ([{"public_key": "AAAA"}], "32 bytes, this one is 3", "AAAA"),
    ([{"public_key": "K", "valid_from": "2026-07-02", "valid_until": "2026-07-01"}], "not after valid_from",
     "valid_until"),
    ([{"public_key": "K", "revoked": "yesterday"}], "not a date or time", "revoked"),
    ([{"public_key": "K", "valid_form": "2026-01-01"}], "unknown key", "valid_form"),
    ([{"public_key": "K"}, {"public_key": "K"}], "registered twice", None),
])
def test_key_mistakes_name_their_line(tmp_path, keys, problem, needle):
    key = generate_key(tmp_path / "a.key")
    keys = [{k: (key.public_key if v == "K" else v) for k, v in entry.items()} for entry in keys]
    text = site_with({"gw-cq-01": keys})
    with pytest.raises(ConfigError, match=problem) as err:
        parse_site_text(text, "site.yaml")
    expected = line_of(text, needle) if needle else [i for i, line in enumerate(text.splitlines(), 1)
                                                      if key.public_key in line][1]
    assert err.value.line == expected, str(err.value)


def test_one_key_for_two_gateways_is_refused(tmp_path):
    key = generate_key(tmp_path / "a.key")
    doc = yaml.safe_load(SITE)
    second = dict(doc["gateways"][0], id="gw-cq-02", meters=[])
    doc["gateways"].append(second)
    doc["gateways"][0]["keys"] = [{"public_key": key.public_key}]
    second["keys"] = [{"public_key": key.public_key}]
    second["meters"] = []
    text = yaml.safe_dump(doc, sort_keys=False)
    with pytest.raises(ConfigError, match="already gateway gw-cq-01's"):
        parse_site_text(text, "site.yaml")


def test_signatures_setting_is_checked():
    with pytest.raises(ConfigError, match="did you mean 'required'"):
        parse_site_text(site_with({}, signatures="requird"), "site.yaml")


def tanji(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tanji", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


def test_keygen_makes_registers_and_rotates(tmp_path):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE)
    key_file = tmp_path / "keys" / "gw.key"
    made = tanji("gateway", "keygen", "--config", str(site_file), "--key-file", str(key_file), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = load_key(key_file)
    assert f'public_key: "{key.public_key}"' in made.stdout and key.key_id in made.stdout
    again = tanji("gateway", "keygen", "--config", str(site_file), "--key-file", str(key_file), cwd=tmp_path)
    assert again.returncode == 2 and "already has a signing key" in again.stderr
    assert load_key(key_file).key_id == key.key_id  # untouched
    # the snippet it printed, pasted into the site file, registers the key
    doc = yaml.safe_load(SITE)
    doc["gateways"][0]["keys"] = [{"public_key": key.public_key}]
    site_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_site(site_file).gateways[0].keys[0].key_id == key.key_id
    rotated = tanji("gateway", "keygen", "--config", str(site_file), "--key-file", str(key_file), "--rotate",
                    cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert load_key(key_file).key_id != key.key_id
    [retired] = list(key_file.parent.glob("gw.key.retired-*"))
    assert load_key(retired).key_id == key.key_id
    assert f"old key {key.key_id} its end: valid_until" in rotated.stdout
