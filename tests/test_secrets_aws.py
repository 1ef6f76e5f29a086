"""Secrets from AWS Secrets Manager, against moto's server on 127.0.0.1: whole and JSON-key
secrets, the TTL cache, rotation, an outage, and values that never reach a log or an error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from daemon_harness import request, running_daemon
from structlog.testing import capture_logs

from montaged.config import Secrets, load
from montaged.errors import ConfigError
from montaged.secrets_aws import AwsSecretRef, AwsSecrets, parse_ref

REGION = "eu-west-1"
SECRET = "s3cr3t-Value-that-must-never-be-logged"
ROTATED = "r0tated-Value-that-must-never-be-logged"


class MotoServer:
    """moto's server as its own process on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.proc.poll() is None, "moto server exited"
                time.sleep(0.1)
        raise AssertionError("moto server did not start in 60 s")

    def client(self) -> Any:
        return boto3.client("secretsmanager", region_name=REGION, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _unique(name: str) -> str:
    return f"montage-test/{name}-{time.monotonic_ns()}"


def _no_secret_in(logs: list[dict[str, Any]]) -> None:
    text = repr(logs)
    assert SECRET not in text and ROTATED not in text


def test_parse_ref() -> None:
    assert parse_ref("aws:prod/montage") == AwsSecretRef("prod/montage")
    ref = AwsSecretRef("prod/montage", "database_password")
    assert parse_ref("aws:prod/montage#database_password") == ref
    assert str(parse_ref("aws:a#b")) == "aws:a#b"
    for bad in ("prod/montage", "aws:", "aws:#key", "aws:x#"):
        with pytest.raises(ConfigError, match=r"aws:<secret id>\[#<json key>\]"):
            parse_ref(bad, "secrets.sources.database_password")


def test_whole_secret_json_key_and_absent(moto: MotoServer) -> None:
    plain, doc = _unique("plain"), _unique("doc")
    c = moto.client()
    c.create_secret(Name=plain, SecretString=f"  {SECRET}\n")
    c.create_secret(Name=doc, SecretString=f'{{"database_password": "{SECRET}", "port": 5432, "empty": ""}}')
    aws = AwsSecrets(region=REGION, endpoint_url=moto.url)  # boto3's own client, env credentials
    value = aws.get(AwsSecretRef(plain))
    assert value is not None and value.get_secret_value() == SECRET
    assert SECRET not in repr(value) and SECRET not in repr(aws)
    value = aws.get(AwsSecretRef(doc, "database_password"))
    assert value is not None and value.get_secret_value() == SECRET
    assert aws.get(AwsSecretRef(doc, "missing")) is None
    assert aws.get(AwsSecretRef(doc, "empty")) is None
    assert aws.get(AwsSecretRef(_unique("absent"))) is None
    with pytest.raises(ConfigError, match="not a JSON object") as e:
        aws.get(AwsSecretRef(plain, "key"))
    assert SECRET not in str(e.value)


def test_cached_for_the_ttl_then_rotation_is_picked_up(moto: MotoServer) -> None:
    name = _unique("rotating")
    c = moto.client()
    c.create_secret(Name=name, SecretString=SECRET)
    clock = Clock()
    aws = AwsSecrets(ttl=300, client=moto.client(), clock=clock)
    with capture_logs() as logs:
        assert aws.get(AwsSecretRef(name)).get_secret_value() == SECRET  # type: ignore[union-attr]
        c.put_secret_value(SecretId=name, SecretString=ROTATED)  # rotation
        clock.now += 299
        assert aws.get(AwsSecretRef(name)).get_secret_value() == SECRET  # type: ignore[union-attr]
        clock.now += 2
        assert aws.get(AwsSecretRef(name)).get_secret_value() == ROTATED  # type: ignore[union-attr]
    assert [entry["event"] for entry in logs] == ["secret rotated; using the new value"]
    assert logs[0]["secret_id"] == name
    _no_secret_in(logs)


def test_an_outage_keeps_the_last_value_and_a_cold_start_says_what_to_check() -> None:
    server = MotoServer()  # its own, to stop it mid-test
    name = _unique("outage")
    server.client().create_secret(Name=name, SecretString=SECRET)
    clock = Clock()
    aws = AwsSecrets(region=REGION, endpoint_url=server.url, ttl=60, clock=clock)
    assert aws.get(AwsSecretRef(name)).get_secret_value() == SECRET  # type: ignore[union-attr]
    server.stop()
    clock.now += 120
    with capture_logs() as logs:
        assert aws.get(AwsSecretRef(name)).get_secret_value() == SECRET  # type: ignore[union-attr]
    assert logs[0]["event"] == "AWS Secrets Manager unavailable; using the last value"
    assert "cannot reach the service" in logs[0]["error"]
    _no_secret_in(logs)
    cold = AwsSecrets(region=REGION, endpoint_url=server.url)
    with pytest.raises(ConfigError, match=f"secret {name} in AWS Secrets Manager: cannot reach the service"):
        cold.get(AwsSecretRef(name))


def test_access_denied_names_the_permission(moto: MotoServer) -> None:
    class Denied:
        def get_secret_value(self, SecretId: str) -> Any:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetSecretValue")

    with pytest.raises(ConfigError, match="secretsmanager:GetSecretValue"):
        AwsSecrets(client=Denied()).get(AwsSecretRef("prod/montage"))


@pytest.mark.anyio
async def test_refresh_loop_fetches_before_values_expire(moto: MotoServer) -> None:
    """The loop refetches in a worker thread; get() itself never has to (its clock stands still)."""
    name = _unique("refresh")
    c = moto.client()
    c.create_secret(Name=name, SecretString=SECRET)
    aws = AwsSecrets(ttl=0.5, client=moto.client(), clock=Clock())
    assert aws.get(AwsSecretRef(name)).get_secret_value() == SECRET  # type: ignore[union-attr]
    c.put_secret_value(SecretId=name, SecretString=ROTATED)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(aws.refresh_loop)
            with anyio.fail_after(20):
                while True:
                    current = aws.get(AwsSecretRef(name))
                    if current is not None and current.get_secret_value() == ROTATED:
                        break
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    _no_secret_in(logs)


# ---- chosen per secret in the config: Secrets and a real daemon ---------------------------------

def _write_config(path: Path, moto: MotoServer, sources: dict[str, str]) -> Path:
    table = ", ".join(f'{k} = "{v}"' for k, v in sources.items())
    path.write_text(f'[secrets]\nsources = {{{table}}}\naws_region = "{REGION}"\n'
                    f'aws_endpoint_url = "{moto.url}"\naws_ttl_seconds = 60\n')
    return path


def test_config_chooses_a_source_per_secret(moto: MotoServer, tmp_path: Path) -> None:
    doc, plain = _unique("db"), _unique("deepgram")
    c = moto.client()
    c.create_secret(Name=doc, SecretString=f'{{"password": "{SECRET}"}}')
    c.create_secret(Name=plain, SecretString=ROTATED)
    mounted = tmp_path / "redis_password"  # a Kubernetes secret volume's file
    mounted.write_text("from-a-file\n")
    config = _write_config(tmp_path / "montage.toml", moto, {
        "database_password": f"aws:{doc}#password", "deepgram_api_key": f"aws:{plain}",
        "redis_password": f"file:{mounted}"})
    settings = load(config, env={"HOME": str(tmp_path)})  # the names in [secrets] are not secrets
    env = {"MONTAGE_DATABASE_PASSWORD": "ignored: the config says aws"}
    secrets = Secrets(env, config=settings.secrets)
    with capture_logs() as logs:
        secrets.prefetch()
        assert secrets.get("database_password").get_secret_value() == SECRET  # type: ignore[union-attr]
        assert secrets.get("deepgram_api_key").get_secret_value() == ROTATED  # type: ignore[union-attr]
        assert secrets.get("redis_password").get_secret_value() == "from-a-file"  # type: ignore[union-attr]
    _no_secret_in(logs)
    # a secret not named in sources comes from the environment, as before
    plain_env = Secrets({"MONTAGE_DATABASE_PASSWORD": "pw"}, config=settings.secrets.model_copy(
        update={"sources": {}}))
    assert plain_env.get("database_password").get_secret_value() == "pw"  # type: ignore[union-attr]
    assert plain_env.aws is None  # no AWS source: boto3 is never touched


def test_bad_sources_and_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    bad = {"database_pasword": "env", "redis_password": "vault:x", "deepgram_api_key": "aws:#key"}
    for name, source in bad.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[secrets]\nsources = {{{name} = "{source}"}}\n')
        with pytest.raises(ConfigError, match=r"secrets\.sources") as e:
            load(path, env={"HOME": str(tmp_path)})
        assert any(why in str(e.value) for why in ("unknown secret", "source must be", "aws:<secret id>"))
    path = tmp_path / "value.toml"
    path.write_text(f'[secrets]\ndeepgram_api_key = "{SECRET}"\n')  # a value, not a source
    with pytest.raises(ConfigError, match="secrets are not read from the config file") as e:
        load(path, env={"HOME": str(tmp_path)})
    assert SECRET not in str(e.value)


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_daemon_reads_and_refreshes_a_secret_from_aws(
    moto: MotoServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    name = _unique("daemon-deepgram")
    c = moto.client()
    c.create_secret(Name=name, SecretString=SECRET)
    async with running_daemon(
        tmp_path, MONTAGE_FRAME__ENABLED="false", MONTAGE_DEEPGRAM__ENABLED="true",
        MONTAGE_SECRETS__SOURCES=json.dumps({"deepgram_api_key": f"aws:{name}"}),
        MONTAGE_SECRETS__AWS_REGION=REGION, MONTAGE_SECRETS__AWS_ENDPOINT_URL=moto.url,
        MONTAGE_SECRETS__AWS_TTL_SECONDS="1",
    ) as daemon:
        stats = await request(daemon.settings.control.socket(), "stats")
        assert stats["cloud"] == {"enabled": True, "blocked": False, "reason": None}  # the key is there
        c.put_secret_value(SecretId=name, SecretString=ROTATED)  # rotation, picked up without a restart
        with anyio.fail_after(30):
            while True:
                value = daemon.secrets.get("deepgram_api_key")
                if value is not None and value.get_secret_value() == ROTATED:
                    break
                await anyio.sleep(0.1)
        assert "secrets_refresh" not in daemon.health()["degraded"]
    out, err = capfd.readouterr()
    assert SECRET not in out + err and ROTATED not in out + err
