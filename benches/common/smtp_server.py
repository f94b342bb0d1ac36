"""aiosmtpd for the sink benches: STARTTLS required, each accepted mail written to a Maildir (tmp/ then new/).

Usage: smtp_server.py HOST PORT CERT KEY MAILDIR. Listens with SO_REUSEPORT, so several processes on one port
share the connections (the kernel spreads them). Prints "ready" once listening. The command call limit is
lifted: a client may send many mails on one connection.
"""
import asyncio
import itertools
import os
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP


class MaildirWriter:
    def __init__(self, maildir):
        self.tmp = os.path.join(maildir, "tmp")
        self.new = os.path.join(maildir, "new")
        for d in (self.tmp, self.new, os.path.join(maildir, "cur")):
            os.makedirs(d, exist_ok=True)
        self.count = itertools.count()
        self.pid = os.getpid()

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}.{self.pid}_{next(self.count)}.bench"
        tmp = os.path.join(self.tmp, name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.new, name))
        return "250 OK"


def main():
    host, port, cert, key, maildir = sys.argv[1:6]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = MaildirWriter(maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(
            handler,
            tls_context=context,
            require_starttls=True,
            hostname="localhost",
            command_call_limit=1_000_000_000,
        )

    loop.run_until_complete(loop.create_server(factory, host, int(port), reuse_port=True))
    print("ready", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
