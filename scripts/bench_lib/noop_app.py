"""Baseline for the acceptance benchmark: a Flask app with one POST route answering 200.

It reads the body (as any webhook receiver must) and does nothing else, so the ratio
archiver / no-op isolates what the archiver adds: signature check plus a durable journal
commit.
"""

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/whatsapp")
def receive() -> tuple[str, int]:
    request.get_data()
    return "", 200
