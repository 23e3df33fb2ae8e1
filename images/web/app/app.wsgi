"""The reference service's application part (Apache's mod_wsgi runs it): `/feature`, a page whose
behaviour the feature flag `new-feature` controls, evaluated through OpenFeature with the provider
pipeline-as-code ships (pipeline.flags.provider, over redis-py: Debian's python3-redis).

- The flag is read from the stack's flag store (a read-only replica first), per request, so a
  `pipeline flag set` is served by the next request: no deploy, no restart.
- Users are bucketed by a targeting key: the `X-User` header, else the `uid` cookie (given to a
  browser that has none), so one user keeps one variant during a partial rollout.
- Every answer says which variant it served (`X-Flag-Variant: new-feature=on|off`): the balancer
  logs it, so a FlagRollout judges each variant's error rate and latency apart.
- Without a flag store (the reference chain's template declares none) every flag is its default
  (off): the page still answers.
"""

import os
import secrets
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, "lib")
sys.path[:0] = [LIB, *sorted(os.path.join(LIB, n) for n in os.listdir(LIB) if n.endswith(".whl"))]

from openfeature import api  # noqa: E402  (after the path above: the wheel and the provider)
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

from pipeline.flags.provider import RedisFlagProvider  # noqa: E402

FLAG = "new-feature"
ETC = "/etc/hello-web"


def _read(name, default=""):
    try:
        with open(os.path.join(ETC, name)) as handle:
            return handle.read().strip()
    except OSError:
        return default


def _store_environment():
    """The store's addresses: the container's environment (local engine), else the file the
    instance's UserData writes (aws)."""
    found = {k: v for k, v in os.environ.items() if k.startswith("PIPELINE_FLAGS_")}
    for line in _read("flags.env").splitlines():
        key, _, value = line.partition("=")
        if key.startswith("PIPELINE_FLAGS_") and key not in found:
            found[key.strip()] = value.strip()
    return found


VERSION = _read("version", "unknown")
FAULT = _read("feature-fault")
"""Set at bake time to make the new variant fail (a rehearsal of a bad release): '500'."""
api.set_provider(RedisFlagProvider.from_environment(_store_environment()))
CLIENT = api.get_client("hello-web")


def _cookie(environ, name):
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def application(environ, start_response):
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    user = environ.get("HTTP_X_USER") or _cookie(environ, "uid")
    if not user:
        user = secrets.token_hex(8)
        headers.append(("Set-Cookie", f"uid={user}; Path=/; Max-Age=31536000; SameSite=Lax"))
    details = CLIENT.get_boolean_details(FLAG, False, EvaluationContext(targeting_key=user))
    variant = "on" if details.value else "off"
    headers.append(("X-Flag-Variant", f"{FLAG}={variant}"))
    if not details.value:
        status, body = "404 Not Found", "Not released yet\n"
    elif FAULT == "500":
        status, body = "500 Internal Server Error", f"The new feature of {VERSION} is broken\n"
    else:
        status, body = "200 OK", f"New feature of {VERSION}\n"
    start_response(status, headers)
    return [body.encode()]
