"""A real S3 HTTP endpoint for tests: moto's server mode on 127.0.0.1, a bucket per test."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "malt-test", "AWS_SECRET_ACCESS_KEY": "malt-test",
               "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``python -m moto.server`` on a free port; yield its URL; stop it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint,
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=CREDENTIALS["AWS_REGION"])


def new_lake_env(endpoint: str, work: Path) -> dict[str, str]:
    """A fresh bucket, and the variables that make it the warehouse (``s3://<bucket>/wh``)
    with ``work`` as this machine's directory."""
    bucket = f"malt-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=bucket)
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "MALT_WAREHOUSE": f"s3://{bucket}/wh",
            "MALT_WORK_DIR": str(work), "DAGSTER_HOME": str(work / "dagster")}


def object_keys(env: dict[str, str], under: str = "") -> list[str]:
    """Every key of the warehouse's bucket under ``wh/<under>``, relative to ``wh/``."""
    bucket, prefix = env["MALT_WAREHOUSE"].removeprefix("s3://").split("/", 1)
    pages = client(env["AWS_ENDPOINT_URL"]).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/{under}")
    return sorted(o["Key"].removeprefix(f"{prefix}/") for page in pages
                  for o in page.get("Contents", []))
