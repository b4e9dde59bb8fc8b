"""Parsing and rendering helpers."""


def parse_request(raw):
    method, path, _version = raw.split(" ", 2)
    return {"method": method, "path": path}


def render_json(payload, status=200):
    return {"status": status, "body": payload}
