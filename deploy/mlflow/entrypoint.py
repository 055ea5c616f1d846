"""Create the artifact bucket (idempotent), then run ``mlflow server`` in the foreground.

Environment: MLFLOW_BACKEND_STORE_URI (postgresql://...), MLFLOW_ARTIFACTS_BUCKET,
MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, MLFLOW_SERVER_WORKERS.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

bucket = os.environ.get("MLFLOW_ARTIFACTS_BUCKET", "mlflow")
# More buckets of the stack's S3 store (the Airflow tasks' checkpoints): MLOPS_EXTRA_BUCKETS="a b".
wanted = [bucket, *os.environ.get("MLOPS_EXTRA_BUCKETS", "").split()]
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for _attempt in range(30):
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for name in wanted:
            if name not in existing:
                s3.create_bucket(Bucket=name)
                sys.stderr.write(f"created bucket s3://{name}\n")
        break
    except (BotoCoreError, ClientError) as err:
        sys.stderr.write(f"S3 store not ready ({err}); retrying\n")
        time.sleep(2)
else:
    sys.exit(f"could not reach the S3 store at {os.environ['MLFLOW_S3_ENDPOINT_URL']}")

args = [
    "mlflow",
    "server",
    "--backend-store-uri",
    os.environ["MLFLOW_BACKEND_STORE_URI"],
    "--artifacts-destination",
    f"s3://{bucket}/",
    "--host",
    "0.0.0.0",
    "--port",
    os.environ.get("MLFLOW_PORT", "5000"),
    "--workers",
    os.environ.get("MLFLOW_SERVER_WORKERS", "2"),
]
os.execvp(args[0], args)
