"""`emotion-agent doctor` as a user runs it: a real process, real Mosquitto brokers, real files.

The broker checks connect for real (the agent's own MQTT client); the Bluetooth check talks
to the fake org.bluez on a private D-Bus (tests/fake_bluez.py). Hardware that cannot exist
here (camera nodes, the Pi firmware's throttling flags) is reported as skip by the doctor
itself, which these tests accept rather than fake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MOSQUITTO, ROOT, Broker, agent_cmd
from tests.fake_bluez import FakeBluez, fake_bluez_fixture  # noqa: F401 (the fixture)
from tests.test_mqtt_transport import KEY_PASS, mosquitto_factory, pki, tls_broker  # noqa: F401

pytestmark = pytest.mark.timeout(90)

SECRET = "hunter2-Do-Not-Print"
MODELS = ROOT / "models"


def doctor(config: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = {**os.environ, **(env or {})}
    env.pop("CREDENTIALS_DIRECTORY", None)
    r = subprocess.run(
        agent_cmd("doctor", "-c", str(config), *extra),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    return r.returncode, r.stdout + r.stderr


def checks(output: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(output)["checks"]}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto that wants user alice with password SECRET."""
    if not os.path.exists(MOSQUITTO) or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto and mosquitto_passwd are not installed (apt install mosquitto)")
    work = tmp_path / "broker"
    work.mkdir()
    b = Broker(work)
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(work / "passwd"), "alice", SECRET], check=True
    )
    b.conf.write_text(
        f"listener {b.port} 127.0.0.1\nallow_anonymous false\npassword_file {work}/passwd\n"
        # as root, mosquitto drops to user mosquitto, who cannot read pytest's 0700 tmp
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    b.start()
    yield b
    b.stop()


def test_broker_ok_exit_0(broker: Broker, tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", f"mqtt: {{broker: {broker.url}}}\n")
    code, out = doctor(cfg, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    c = checks(out)
    assert c["broker"]["status"] == "ok" and "connected" in c["broker"]["detail"]
    assert c["face detector model"]["status"] == "ok"
    assert c["expression model"]["status"] == "ok"
    # numpy 1.x beside tflite-runtime on Python 3.11 (bookworm), 2.x on 3.12+ (trixie)
    numpy_major = "1." if sys.version_info < (3, 12) else "2."
    assert c["numpy"]["status"] == "ok" and c["numpy"]["detail"].startswith(numpy_major)
    # which runtime runs, and why
    assert c["runtime"]["status"] == "ok" and " runs (models.runtime auto" in c["runtime"]["detail"]
    assert all(r["status"] in ("ok", "warn", "skip") for r in report["checks"])
    assert all(r["fix"] for r in report["checks"] if r["status"] in ("warn", "fail"))


def test_broker_down_fails_with_a_fix(broker: Broker, tmp_path: Path) -> None:
    url = broker.url
    broker.stop()
    cfg = write(tmp_path / "c.yaml", f"mqtt: {{broker: {url}}}\n")
    code, out = doctor(cfg)
    assert code == 1, out
    line = next(x for x in out.splitlines() if "broker" in x and "FAIL" in x)
    assert "Connection refused" in line
    fix = out.splitlines()[out.splitlines().index(line) + 1]
    assert "fix:" in fix and f"{broker.port}" in fix
    code, out = doctor(cfg, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    assert checks(out)["broker"]["fix"]


def test_credentials_right_and_wrong_and_never_printed(auth_broker: Broker, tmp_path: Path) -> None:
    # the password as a systemd credential: read from beside the config outside systemd
    cfg = write(
        tmp_path / "c.yaml",
        f"mqtt:\n  broker: {auth_broker.url}\n  username: alice\n"
        "  password: {credential: mqtt_password}\n",
    )
    write(tmp_path / "mqtt_password", SECRET + "\n")
    code, out = doctor(cfg, "--json")
    assert code == 0, out
    assert checks(out)["broker"]["detail"].endswith("connected as alice")
    assert SECRET not in out

    write(tmp_path / "mqtt_password", "not-" + SECRET)
    code, out = doctor(cfg, "--json")
    assert code == 1
    broker = checks(out)["broker"]
    assert broker["status"] == "fail" and "Not authorized" in broker["detail"]
    assert "mqtt_password" in broker["fix"] and "username" in broker["fix"]
    assert SECRET not in out


def test_secrets_masked_in_the_dump(auth_broker: Broker, tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.yaml",
        f"mqtt:\n  broker: mqtt://alice:{SECRET}@127.0.0.1:{auth_broker.port}\n"
        f"  password: {SECRET}\n  tls: {{key_password: {SECRET}}}\n",
    )
    # (TLS against a plain listener fails; the point here is what gets printed)
    for mode in ((), ("--json",)):
        _, out = doctor(cfg, *mode)
        assert SECRET not in out, out
        assert "********" in out
    dump = json.loads(doctor(cfg, "--json")[1])["config"]["mqtt"]
    assert dump["password"] == "********" and dump["tls"]["key_password"] == "********"
    assert dump["broker"] == f"mqtt://alice:********@127.0.0.1:{auth_broker.port}"


def test_model_checksum_mismatch(broker: Broker, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.py", "*.md"))
    bad = models / "emotion_minixception_int8.tflite"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    cfg = write(
        tmp_path / "c.yaml",
        f"mqtt: {{broker: {broker.url}}}\n"
        f"models:\n  face_detector: {models}/face_detection_short_range.tflite\n"
        f"  expression: {bad}\n",
    )
    code, out = doctor(cfg, "--json")
    assert code == 1
    c = checks(out)
    assert c["face detector model"]["status"] == "ok"
    assert c["expression model"]["status"] == "fail"
    assert "sha256" in c["expression model"]["detail"]
    assert "build_models.py" in c["expression model"]["fix"]

    bad.unlink()
    code, out = doctor(cfg, "--json")
    assert code == 1 and "not found" in checks(out)["expression model"]["detail"]


def test_bluetooth_adapter_via_bluez(fake_bluez: FakeBluez, broker: Broker, tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", f"mqtt: {{broker: {broker.url}}}\nsources: {{heart: {{}}}}\n")
    code, out = doctor(cfg, "--json")
    bt = checks(out)["bluetooth"]
    # warn is allowed: this user or the service user may not be in group bluetooth here
    assert bt["status"] in ("ok", "warn"), bt
    assert "BlueZ adapter hci0 powered" in bt["detail"]

    cfg = write(
        tmp_path / "c2.yaml",
        f"mqtt: {{broker: {broker.url}}}\nsources: {{heart: {{adapter: hci7}}}}\n",
    )
    code, out = doctor(cfg, "--json")
    bt = checks(out)["bluetooth"]
    assert code == 1 and bt["status"] == "fail" and "hci7" in bt["detail"] and bt["fix"]


def test_text_report_and_json_agree(broker: Broker, tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", f"mqtt: {{broker: {broker.url}}}\n")
    code_text, text = doctor(cfg)
    code_json, js = doctor(cfg, "--json")
    assert code_text == code_json == 0
    for name, c in checks(js).items():
        tag = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[c["status"]]
        assert any(line.split()[:1] == [tag] and name in line for line in text.splitlines())
    assert "configuration (secrets masked):" in text


def test_broker_over_tls_right_and_wrong_ca(
    tmp_path: Path,
    pki: Path,  # noqa: F811 (the fixture imported above)
    tls_broker: tuple,  # noqa: F811
) -> None:
    """Mutual TLS with an encrypted client key; then a CA that did not sign the broker."""
    tls_port = tls_broker[0]
    write(tmp_path / "keypw", KEY_PASS)

    def cfg(ca: str) -> Path:
        return write(
            tmp_path / f"{ca}.yaml",
            f"mqtt:\n  broker: mqtts://127.0.0.1:{tls_port}\n  tls:\n"
            f"    ca_file: {pki / ca}\n    cert_file: {pki / 'client.crt'}\n"
            f"    key_file: {pki / 'client.key'}\n"
            f"    key_password: {{file: {tmp_path / 'keypw'}}}\n",
        )

    code, out = doctor(cfg("ca.crt"), "--json")
    broker = checks(out)["broker"]
    assert code == 0 and broker["status"] == "ok", broker
    assert "(TLS): connected" in broker["detail"]
    code, out = doctor(cfg("other-ca.crt"), "--json")
    broker = checks(out)["broker"]
    assert code == 1 and broker["status"] == "fail"
    assert "certificate" in broker["detail"].lower() and "ca_file" in broker["fix"]
    assert KEY_PASS not in out
