"""`helm test`: every gRPC service answers SERVING for its health service name, and the edge answers
one REST call. Runs in the application image (grpcio and grpcio-health-checking are dependencies).

Checks come from the environment: GRPC_CHECKS="host:port=service,host:port=service" and REST_URL.
Retries for RETRY_SECONDS so that a `helm test` right after `helm install --wait` is not flaky.
"""
import os
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_status(address: str, service: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def rest_status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            reply.read()
            return str(reply.status)
    except Exception as error:  # noqa: BLE001 - any failure is reported and retried
        return f"{type(error).__name__}: {error}"


def main() -> int:
    checks = [item.split("=", 1) for item in os.environ["GRPC_CHECKS"].split(",") if item]
    url = os.environ.get("REST_URL", "")
    deadline = time.monotonic() + float(os.environ.get("RETRY_SECONDS", "60"))
    while True:
        results = [(f"grpc {address} {service!r}", grpc_status(address, service), "SERVING")
                   for address, service in checks]
        if url:
            results.append((f"GET {url}", rest_status(url), "200"))
        failed = [r for r in results if r[1] != r[2]]
        if not failed or time.monotonic() > deadline:
            break
        time.sleep(3)
    for what, got, want in results:
        print(f"{'ok  ' if got == want else 'FAIL'} {what}: {got}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
