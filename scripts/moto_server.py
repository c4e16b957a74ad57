"""moto's server, with DynamoDB requests applied one at a time.

Real DynamoDB applies each conditional write atomically; moto's threaded server can interleave
two of them on one item, so a race test would see both "win". Serialising DynamoDB calls gives
moto DynamoDB's atomicity; SQS and S3 stay concurrent (SQS long polls must not block others).
"""
import argparse
import os
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

_dynamodb = threading.Lock()


class AtomicDynamoDB:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with _dynamodb:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, AtomicDynamoDB(app), threaded=True)


if __name__ == "__main__":
    main()
