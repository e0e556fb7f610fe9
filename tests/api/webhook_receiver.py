"""A Standard Webhooks receiver for the API tests.

Listens on 127.0.0.1 (port 0: it prints the port it got, then serves), verifies every request
with the `standardwebhooks` library against the secret in `<dir>/secrets/<path>` (the request
path without its slash; the test writes it once it has created the webhook), and appends one
JSON line per request to `<dir>/requests.jsonl` when it arrives ("arrived": its webhook-id,
whether it verified, the body) and one when it answers ("answered": the status it sent).

Answers: 500 to the first `--fail-first` requests of each path; while `--hold` is given and the
file `<dir>/release` does not exist, a request is held until it does and then answered 503
(it was cut off: the gateway that sent it is gone by then); otherwise 200.
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    log_path = os.path.join(args.dir, "requests.jsonl")
    lock = threading.Lock()
    counts = {}

    def record(entry):
        with lock:
            with open(log_path, "a") as log:
                log.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            name = self.path.strip("/")
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                number = counts.get(name, 0) + 1
                counts[name] = number
            verified, error = False, None
            try:
                with open(os.path.join(args.dir, "secrets", name)) as secret_file:
                    secret = secret_file.read().strip()
                Webhook(secret).verify(body, dict(self.headers.items()))
                verified = True
            except Exception as exc:  # noqa: BLE001 - any failure is recorded, not raised
                error = "{}: {}".format(type(exc).__name__, exc)
            record({
                "kind": "arrived",
                "path": name,
                "number": number,
                "webhook_id": self.headers.get("webhook-id"),
                "webhook_timestamp": self.headers.get("webhook-timestamp"),
                "verified": verified,
                "error": error,
                "body": body.decode("utf-8", "replace"),
                "at": time.time(),
            })
            release = os.path.join(args.dir, "release")
            if args.hold and not os.path.exists(release):
                while not os.path.exists(release):
                    time.sleep(0.05)
                status = 503
            elif number <= args.fail_first:
                status = 500
            else:
                status = 200
            record({"kind": "answered", "path": name, "number": number,
                    "webhook_id": self.headers.get("webhook-id"), "status": status})
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
