"""The local S3 endpoint: moto's server on loopback, with the buckets the platform uses."""

from __future__ import annotations

from devstack.config import S3_DEV_KEY_ID, S3_DEV_KEY_SECRET, VENV_BIN
from devstack.processes import ProcessGroup, http_get, wait_until


class S3Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"

    def start(self, group: ProcessGroup) -> None:
        group.start("s3", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])
        wait_until(self.ready, f"S3 (moto) on port {self.port}", timeout=30, group=group, interval=0.2)

    def ready(self) -> bool:
        try:
            status, _ = http_get(f"{self.endpoint_url}/moto-api/", timeout=1)
        except OSError:
            return False
        return status < 500

    def client(self):
        import boto3  # lazy: only the stack's start-up needs it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_DEV_KEY_ID,
            aws_secret_access_key=S3_DEV_KEY_SECRET,
            region_name="us-east-1",
        )

    def create_buckets(self, names: tuple[str, ...]) -> None:
        client = self.client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        for name in names:
            if name not in existing:
                client.create_bucket(Bucket=name)
