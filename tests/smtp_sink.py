#!/usr/bin/env python3
"""A real SMTP server for Handoff's tests (aiosmtpd; Debian's python3-aiosmtpd).

Usage: smtp_sink.py PORT DIR [starttls|tls CERT KEY]

Listens on 127.0.0.1:PORT (with STARTTLS required, or TLS from the first byte, using CERT and
KEY when given) and writes each message it accepts, as received, to DIR/NNNNNN.eml
(whole files only: written under a temporary name, then renamed). While a file DIR/refuse
exists, it answers every message with 451 (try again later), as a mail server that is
overloaded does. Prints "ready" once it listens; stops when its standard input closes or it is
killed, so it never outlives the test that started it.
"""
import itertools
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if os.path.exists(os.path.join(self.directory, "refuse")):
            return "451 4.3.0 Try again later"
        with self.lock:
            number = next(self.numbers)
        name = os.path.join(self.directory, f"{number:06}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 2.0.0 Accepted"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    options = {}
    if len(sys.argv) == 6:
        mode, cert, key = sys.argv[3:6]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        if mode == "starttls":
            options = {"tls_context": context, "require_starttls": True}
        else:
            options = {"ssl_context": context}
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
