"""Fixtures for the PostgreSQL and S3 adapter tests: queue and output tables named per test on the
local PostgreSQL (dropped after it), and an S3 store (moto's server, in this test process, one per
test session) with a bucket per test."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_DSN = "postgresql://root@127.0.0.1:5432/test"


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [b"m%05d" % i for i in range(start, start + n)]


def bumped(msgs: list[bytes]) -> set[bytes]:
    return {bytes(b + 1 for b in m) for m in msgs}


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------


class PgTables:
    """A queue table (with its NOTIFY trigger, as docs/adapters.md tells operators to make it) and
    an output table, both named for one test."""

    def __init__(self) -> None:
        import psycopg

        self.uid = uuid.uuid4().hex[:10]
        self.queue, self.out = f"q_{self.uid}", f"out_{self.uid}"
        self.conn = psycopg.connect(PG_DSN, autocommit=True)
        self.conn.execute(f"CREATE TABLE {self.queue} (id bigserial PRIMARY KEY, payload bytea NOT NULL)")
        self.conn.execute(f"CREATE FUNCTION {self.queue}_notify() RETURNS trigger LANGUAGE plpgsql AS "
                          f"$$ BEGIN PERFORM pg_notify('{self.queue}', ''); RETURN NULL; END $$")
        self.conn.execute(f"CREATE TRIGGER {self.queue}_notify AFTER INSERT ON {self.queue} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION {self.queue}_notify()")
        self.conn.execute(f"CREATE TABLE {self.out} (id bytea PRIMARY KEY, payload bytea NOT NULL)")

    def ingress(self, **params: str) -> str:
        return f"{PG_DSN}?" + "&".join(f"{k}={v}" for k, v in {"table": self.queue, **params}.items())

    def egress(self, **params: str) -> str:
        return f"{PG_DSN}?" + "&".join(f"{k}={v}" for k, v in {"table": self.out, **params}.items())

    def produce(self, msgs: list[bytes]) -> None:
        with self.conn.cursor() as cur, cur.copy(f"COPY {self.queue} (payload) FROM STDIN") as copy:
            for m in msgs:
                copy.write_row((m,))

    def left(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.queue}").fetchone()[0])

    def output(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.conn.execute(f"SELECT payload FROM {self.out}").fetchall()]

    def wait_output(self, want: int, timeout: float = 60.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            n = int(self.conn.execute(f"SELECT count(*) FROM {self.out}").fetchone()[0])
            if n >= want or time.monotonic() > deadline:
                return self.output()
            time.sleep(0.1)

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.queue}, {self.out}")
        self.conn.execute(f"DROP FUNCTION IF EXISTS {self.queue}_notify()")
        self.conn.close()


@pytest.fixture
def pg_tables() -> Iterator[PgTables]:
    pytest.importorskip("psycopg")
    tables = PgTables()
    yield tables
    tables.close()


# --------------------------------------------------------------------------------------------------
# S3 through moto's server
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, in this process, for the whole test session."""
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log record per request slows the server down
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


#: what the standard AWS chain gives byteor-edgeplane and the test's own client (moto takes any key)
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Bucket:
    """A bucket named for one test, with an input and an output prefix."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.name = f"byteor-{uuid.uuid4().hex[:12]}"
        self.client: Any = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                        aws_access_key_id="testing", aws_secret_access_key="testing")
        self.client.create_bucket(Bucket=self.name)

    def uri(self, prefix: str, **params: str) -> str:
        q = {"endpoint": self.endpoint, **params}
        return f"s3://{self.name}/{prefix}?" + "&".join(f"{k}={v}" for k, v in q.items())

    def put_lines(self, key: str, msgs: list[bytes]) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=b"".join(m + b"\n" for m in msgs))

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", ())]
        return out

    def read_lines(self, prefix: str) -> list[bytes]:
        out: list[bytes] = []
        for key in self.keys(prefix):
            out += self.client.get_object(Bucket=self.name, Key=key)["Body"].read().splitlines()
        return out

    def wait_lines(self, prefix: str, want: int, timeout: float = 60.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_lines(prefix)
            if len(got) >= want or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def close(self) -> None:
        for key in self.keys(""):
            self.client.delete_object(Bucket=self.name, Key=key)
        self.client.delete_bucket(Bucket=self.name)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)  # byteor-edgeplane inherits the standard AWS environment
    bucket = S3Bucket(s3_endpoint)
    yield bucket
    bucket.close()


def aws_env() -> dict[str, str]:
    return {k: os.environ.get(k, v) for k, v in AWS_ENV.items()}
