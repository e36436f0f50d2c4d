"""A real SMTP server for the email sink's tests (aiosmtpd, Debian's python3-aiosmtpd).

Started by sinks/src/testing/smtp.rs with one JSON argument:
  {"script": ["451 4.3.0 try later", ...],  answers to DATA, in order; then 250
   "tls": null | "starttls" | "implicit", "cert": path, "key": path,
   "require_starttls": bool, "user": str, "password": str}
It prints one JSON line with the port it listens on, then one JSON line per DATA command:
  {"answer", "mail_from", "rcpt_tos", "data", "tls", "login"}.
"""

import asyncio
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

config = json.loads(sys.argv[1])
script = list(config.get("script") or [])


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        answer = script.pop(0) if script else "250 2.0.0 OK"
        login = getattr(session.auth_data, "login", None)
        out({
            "answer": answer,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": login.decode() if isinstance(login, bytes) else login,
        })
        return answer


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == config.get("user")
        and auth_data.password.decode() == config.get("password")
    )
    # handled=False: aiosmtpd answers 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


async def main():
    context = None
    if config.get("tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config["cert"], config["key"])
    implicit = config.get("tls") == "implicit"
    auth = {"authenticator": authenticator} if config.get("user") else {}

    def factory():
        return SMTP(
            Handler(),
            hostname="smtp.test",
            tls_context=context if config.get("tls") == "starttls" else None,
            require_starttls=bool(config.get("require_starttls")),
            auth_require_tls=not implicit,  # implicit TLS is TLS too
            **auth,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, host="127.0.0.1", port=0, ssl=context if implicit else None
    )
    out({"port": server.sockets[0].getsockname()[1]})
    async with server:
        await server.serve_forever()


asyncio.run(main())
