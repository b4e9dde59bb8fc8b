"""A tiny HTTP-ish service used as mnemo's sample repository."""
import json
from app.util import parse_request, render_json


class RequestHandler:
    """Dispatches parsed requests to handlers."""

    def __init__(self, routes):
        self.routes = routes

    def handle(self, raw):
        request = parse_request(raw)
        handler = self.routes.get(request["path"], self.not_found)
        return handler(request)

    def not_found(self, request):
        return render_json({"error": "not found", "path": request["path"]}, status=404)


def health(request):
    return render_json({"status": "ok"})


def main():
    server = RequestHandler({"/health": health})
    print(json.dumps(server.handle("GET /health HTTP/1.1")))


if __name__ == "__main__":
    main()
