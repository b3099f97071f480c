"""HTTP handlers of the org domain: parse, ask the state, render."""
import socket
import struct
import time

from flask import Blueprint, Response, current_app, request

from lab.dispatch import host_of
from lab.flaskapp import label

bp = Blueprint("org_domain", __name__)
SOCKET_KEY = "mdmlab.socket"


@bp.get("/<path:path>")
def serve(path):
    identifier = request.args.get("user-identifier")
    label(stage="discovery", device=identifier)
    answer = current_app.config["STATE"].respond(host_of(request.environ), "/" + path, request.args,
                                                 request.query_string.decode("latin-1"))
    label(summary=f"{answer.status}: {answer.summary}")
    if answer.reset:
        return _reset_connection(answer.summary)
    if answer.delay:
        time.sleep(answer.delay)
    response = Response(answer.body, status=answer.status, content_type=answer.content_type)
    if answer.location:
        response.headers["Location"] = answer.location
    response.headers.extend(answer.headers)
    return response


def _reset_connection(summary: str):
    """Abort the connection as a firewall would: the request gets no answer at all (444 in the timeline)."""
    sock = request.environ.get(SOCKET_KEY)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    label(summary=f"{summary}: connection aborted")
    return Response(b"", status=444)
