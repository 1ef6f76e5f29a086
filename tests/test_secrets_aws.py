"""Secrets from AWS Secrets Manager, against moto's server on 127.0.0.1: whole and JSON-key
secrets, the TTL cache, rotation, an outage, and values that never reach a log or an error."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import boto3
import pytest
from structlog.testing import capture_logs

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
