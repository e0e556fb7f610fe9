"""A real WebSocket client for the API tests (PyPI websockets, in tools/venv).

    ws_client.py URL [--header 'Name: value']... [--origin ORIGIN] [--stall-after N]

Prints one JSON line per thing that happens, flushed at once:
  {"open": true}                      the handshake succeeded
  {"rejected": 403, "body": "..."}    the server refused the handshake with that status
  <the message, as received>          one line per text message
  {"stalled": N}                      after N messages it stops reading until a line on stdin
  {"close": 1000, "reason": ""}       the server closed the connection (code and reason)
"""

import argparse
import json
import sys

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def say(value):
    sys.stdout.write(value if isinstance(value, str) else json.dumps(value))
    sys.stdout.write("\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--origin")
    parser.add_argument("--stall-after", type=int)
    args = parser.parse_args()
    headers = [tuple(part.strip() for part in h.split(":", 1)) for h in args.header]
    try:
        # A small queue: a stalled reader stops reading the socket, so the server's writes
        # back up as a slow client's would.
        ws = connect(args.url, additional_headers=headers, origin=args.origin, max_queue=4,
                     open_timeout=30)
    except InvalidStatus as refused:
        say({"rejected": refused.response.status_code,
             "body": refused.response.body.decode("utf-8", "replace")})
        return
    say({"open": True})
    received = 0
    with ws:
        try:
            while True:
                message = ws.recv()
                say(message)
                received += 1
                if args.stall_after is not None and received == args.stall_after:
                    say({"stalled": received})
                    sys.stdin.readline()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            say({"close": frame.code if frame else None, "reason": frame.reason if frame else None})


if __name__ == "__main__":
    main()
