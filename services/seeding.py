"""Putting source objects into any S3 server (ours or SeaweedFS) with boto3, outside the pipeline."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Iterable, Iterator

from pillpipe.common.calls import DEFAULT_REGION, botocore_options, expected_size, source_body
from pillpipe.common.model import FileRecord
from pillpipe.common.source import InputError, open_input, records
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


def input_objects(path: str, fmt: str | None) -> Iterator[tuple[str, str, int]]:
    """(bucket, key, size) of the source object each valid record of an ``--input`` file names: what
    the S3 stage will copy from (streamed; invalid and duplicate records name none)."""
    stream, fmt = open_input(path, fmt)
    with stream:
        try:
            for item in records(0, stream, fmt):
                if isinstance(item, FileRecord):
                    yield item.source_bucket or SOURCE_BUCKET, item.source_key or item.name, expected_size(item)
        except InputError:  # unreadable from here on: the run reads it again and says so
            return


def seed_objects(client: Any, objects: Iterable[tuple[str, str, int]]) -> int:
    """PutObject each (bucket, key, size), making each bucket first; closes ``client``.  An object
    that cannot be put (a name S3 cannot carry) is left out: its file then fails at the S3 stage."""
    made: set[str] = set()

    def put(item: tuple[str, str, int]) -> int:
        bucket, key, size = item
        try:
            client.put_object(Bucket=bucket, Key=key, Body=source_body(key, size))
        except Exception:  # noqa: BLE001 - that file's copy will say what is wrong
            return 0
        return 1

    def buckets(items: Iterable[tuple[str, str, int]]) -> Iterator[tuple[str, str, int]]:
        for item in items:
            if item[0] not in made:
                made.add(item[0])
                try:
                    client.create_bucket(Bucket=item[0])
                except Exception:  # noqa: BLE001 - it exists, or its name is bad: the puts say so
                    pass
            yield item

    try:
        with ThreadPoolExecutor(8, thread_name_prefix="seed") as pool:
            return sum(pool.map(put, buckets(objects)))
    finally:
        client.close()


def spool(stream: IO[bytes], path: str) -> str:
    """Copy ``stream`` (stdin) into ``path``, so it can be read twice: to seed, then by the run."""
    with open(path, "wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
    return path
