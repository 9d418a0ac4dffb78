"""The e-mail tests' SMTP server: aiosmtpd on 127.0.0.1 at a port the system picks
(printed on the first line). Each message it accepts becomes DIR/NNNNNN.json: the
envelope, the decoded subject and headers, and each part by content type, as Python's
email package reads them (independently of the sender's encoder)."""
import asyncio
import json
import os
import sys
from email import message_from_bytes, policy

from aiosmtpd.smtp import SMTP


class Saver:
    def __init__(self, out):
        self.out, self.n = out, 0

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=policy.default)
        parts = {
            p.get_content_type(): p.get_content().replace("\r\n", "\n")
            for p in msg.walk()
            if not p.is_multipart()
        }
        self.n += 1
        path = os.path.join(self.out, f"{self.n:06}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "subject": str(msg["subject"]),
                    "from": str(msg["from"]),
                    "to": str(msg["to"]),
                    "message_id": str(msg["message-id"]),
                    "content_type": msg.get_content_type(),
                    "parts": parts,
                },
                f,
                ensure_ascii=False,
            )
        # Renamed when complete: the test never reads half a message.
        os.replace(path + ".tmp", path)
        return "250 OK"


async def main(out):
    loop = asyncio.get_running_loop()
    # One handler for every connection: its count names the files.
    saver = Saver(out)
    server = await loop.create_server(
        lambda: SMTP(saver, enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main(sys.argv[1]))
