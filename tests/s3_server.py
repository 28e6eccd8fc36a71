"""A real S3-compatible server on loopback for the object storage tests: moto's threaded
server (``moto[server]``), spoken to over HTTP by the same clients as real S3 (s3fs,
botocore). Credentials are dummies; the endpoint comes from ``AWS_ENDPOINT_URL``, exactly
how a user points Albumforge at MinIO or any S3-compatible store."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

S3_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION",
               "AWS_DEFAULT_REGION")


@contextmanager
def s3_server() -> Iterator[dict]:
    """Start the server; yield the environment a client needs (keys, endpoint, region)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-" + secrets.token_hex(4),
               "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        server.stop()


def make_bucket(env: dict, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)
