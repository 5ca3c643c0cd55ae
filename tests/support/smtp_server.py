#!/usr/bin/env python3
"""A real SMTP server for the delivery tests: aiosmtpd (PyPI), STARTTLS and AUTH required.

    smtp_server.py PORT CERT KEY OUTDIR USER PASSWORD

Each accepted message is written to OUTDIR/<n>.eml, with OUTDIR/<n>.json holding what the
session saw (TLS on, authenticated user, envelope). Prints "ready" once listening; stops on
SIGTERM.
"""
import json
import logging
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs a deprecation of its own internals on every AUTH; not ours to fix.
logging.getLogger("mail.log").setLevel(logging.ERROR)
port, cert, key, outdir, user, password = sys.argv[1:7]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
count = 0
lock = threading.Lock()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        with lock:
            count += 1
            n = count
        with open(os.path.join(outdir, f"{n}.eml"), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(os.path.join(outdir, f"{n}.json"), "w") as f:
            json.dump({"tls": session.ssl is not None, "user": session.authenticated and user,
                       "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        return "250 OK"


controller = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=ctx,
                        require_starttls=True, authenticator=authenticator, auth_required=True,
                        auth_require_tls=True, server_hostname="localhost")
controller.start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
controller.stop()
