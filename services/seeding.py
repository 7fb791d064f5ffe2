"""Putting source objects into any S3 server (ours or SeaweedFS) with boto3, outside the pipeline."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from pillpipe.common.calls import DEFAULT_REGION, botocore_options, source_body
from pillpipe.common.workload import SOURCE_BUCKET


def s3_client(url: str, access_key: str | None, secret_key: str | None, ca_file: str | None = None) -> Any:
    """A boto3 client with the project's settings, for seeding and checks outside the pipeline."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=url, region_name=DEFAULT_REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, verify=ca_file, config=Config(**botocore_options(8, 30.0)))


def seed(client: Any, objects: Iterable[tuple[str, int]], bucket: str = SOURCE_BUCKET) -> int:
    """PutObject each (key, size) with its deterministic content, eight at a time; closes ``client``."""
    try:
        with ThreadPoolExecutor(8, thread_name_prefix="seed") as pool:
            return sum(1 for _ in pool.map(
                lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=source_body(*item)), objects))
    finally:
        client.close()
