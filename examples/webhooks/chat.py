"""A stand-in for a chat tool's incoming webhook: prints the text of each message POSTed to
it (the ``{"text": ...}`` that ``flowyard serve`` sends as an alert) and appends it to
``out/chat.ndjson``.

::

    python chat.py --port 8091        # then FLOWYARD_ALERT_URL=http://127.0.0.1:8091/hook

Standard library only.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "chat.ndjson"


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        message = json.loads(body or b"{}")
        OUT.parent.mkdir(exist_ok=True)
        with OUT.open("a", encoding="utf-8") as out:
            out.write(json.dumps(message) + "\n")
        print(f"chat: {message.get('text')}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per message is enough


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Hook)
    print(f"chat: listening on http://127.0.0.1:{args.port}/hook", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
