"""Readiness checks used by the local service scripts (run with the project's venv).

    python infra/local/check_services.py kafka localhost:9092
    python infra/local/check_services.py redis redis://127.0.0.1:6379/0
    python infra/local/check_services.py redis-node redis://127.0.0.1:17000/0   # a cluster node, no slots yet
    S3_ACCESS_KEY=… S3_SECRET_KEY=… python infra/local/check_services.py s3 http://127.0.0.1:9300 BUCKET

Exit 0 when the service answers for real (Kafka: cluster metadata with a live broker;
Redis: version >= 8 and a VADD/VSIM/VREM round trip on a scratch key), non-zero otherwise.
"""

import sys
import uuid


def check_kafka(bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers"):
            raise SystemExit("kafka: no broker in the cluster metadata yet")
    finally:
        admin.close()


def check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3)
    version = client.info("server")["redis_version"]
    if int(version.split(".")[0]) < 8:
        raise SystemExit(f"redis: version {version} has no vector sets (need >= 8)")
    key = f"__embedworker_check:{uuid.uuid4().hex}"
    vs = client.vset()
    try:
        vs.vadd(key, [1.0, 0.0, 0.0], "a")
        vs.vadd(key, [0.0, 1.0, 0.0], "b")
        top = vs.vsim(key, [0.9, 0.1, 0.0], count=1)
        if [t.decode() if isinstance(t, bytes) else t for t in top] != ["a"]:
            raise SystemExit(f"redis: VSIM returned {top!r}, expected ['a']")
        vs.vrem(key, "a")
    finally:
        client.delete(key)
    print(f"redis {version}: VADD/VSIM/VREM work")


def check_redis_node(url: str) -> None:
    """A cluster node before it has slots: it answers, is >= 8 and has cluster mode on."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3)
    info = client.info()
    if int(info["redis_version"].split(".")[0]) < 8 or not info.get("cluster_enabled"):
        raise SystemExit(f"redis: {url} is {info['redis_version']}, cluster_enabled={info.get('cluster_enabled')}")


def check_s3(endpoint: str, bucket: str) -> None:
    """The bucket takes a write, and a second conditional write of the same key (`If-None-Match: *`,
    how delta-rs commits) is refused with 412: without that, two commits could both succeed."""
    import os

    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}))
    key = f"_embedworker_check/{uuid.uuid4().hex}"
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 412:
                raise
        else:
            raise SystemExit("s3: a second PUT with If-None-Match: * was accepted (no conditional writes)")
    finally:
        client.delete_object(Bucket=bucket, Key=key)
    print("s3: conditional writes work")


if __name__ == "__main__":
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "s3":
        check_s3(target, sys.argv[3])
    else:
        {"kafka": check_kafka, "redis": check_redis, "redis-node": check_redis_node}[kind](target)
