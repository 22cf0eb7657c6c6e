"""Serves the demo's CSVs on loopback, optionally slowly (to give tests time to kill a task
mid-download). Usage: demo_http.py PORT DIR [--delay-per-chunk SECONDS]"""

import argparse
import functools
import http.server
import time


class SlowHandler(http.server.SimpleHTTPRequestHandler):
    delay = 0.0

    def copyfile(self, source, outputfile):
        while chunk := source.read(16 * 1024):
            outputfile.write(chunk)
            outputfile.flush()
            if self.delay:
                time.sleep(self.delay)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("directory")
    parser.add_argument("--delay-per-chunk", type=float, default=0.0)
    args = parser.parse_args()
    SlowHandler.delay = args.delay_per_chunk
    handler = functools.partial(SlowHandler, directory=args.directory)
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
