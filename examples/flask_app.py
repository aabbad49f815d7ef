"""A Flask app limited by Flux.

    flask --app examples/flask_app run
"""

from __future__ import annotations

from flask import Flask, jsonify

from flux import forwarded_for, rate_limit
from flux.flask import Flux

app = Flask(__name__)
# Every request: 600 a minute per client; /health is not limited.
Flux(app, rate="600/minute", rules={"/health": None})


@app.route("/")
@rate_limit(requests=5, period=10)
def index():
    return jsonify(message="Hello World")


@app.route("/login", methods=["GET", "POST"])
@rate_limit(requests=5, period=300, policy="token_bucket")  # 5 tries every 5 minutes
def login():
    return "Login Page"


@app.route("/behind-proxy")
# Only when the app really runs behind one proxy that appends X-Forwarded-For.
@rate_limit(requests=10, period=60, key=forwarded_for(hops=1))
def behind_proxy():
    return "ok"


@app.route("/health")
def health():
    return "ok"


if __name__ == "__main__":
    app.run(port=5000)
