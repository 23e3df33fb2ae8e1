"""Traffic shaping at the local balancer beyond upstream weights: the nginx text for a sticky canary
(users split by a cookie the balancer sets, `split_clients`), user groups (a header or a cookie,
`map`) and a dark launch (every request mirrored to the new version, `mirror`, its answers
discarded). Pure functions: balancer_config.py puts the text into nginx.conf.

- **Sticky split**: a user without the `pipeline_user` cookie gets one (its value is the request's
  `$request_id`); `split_clients` hashes the cookie (salted per release) to the new or the old
  upstream, so a user stays on one version for the whole step. Raising the step's percentage
  only moves users from old to new: hash ranges are given in order, the new version's first.
- **Groups**: requests whose header (or cookie) matches a group's values go to the new upstream;
  the first matching group names the request in a second log (`groups.log`), so each group's
  requests on each version are counted apart.
- **Mirror**: `location /` copies every request to an internal location that proxies it to the
  dark upstream (only the methods asked for; others get an empty answer there and never reach
  the new version). Its requests are logged to `mirror.log`, never to the health log, so the
  users' numbers stay the users'.

The new version's upstream lists the old replicas as `backup`: a request the new version refuses
(connection refused or reset) still gets an answer, and the refusal counts against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.strategy import USER_COOKIE, Group

MIRROR_LOG = "/var/log/nginx/mirror.log"
"""The dark launch's request log: one line per mirrored request (the new version's answer)."""
GROUPS_LOG = "/var/log/nginx/groups.log"
"""While groups are routed: one line per request, the group it matched and who answered."""
MIRROR_COMMENT = "# mirror: "
"""The config line naming the dark set (read back by the next deploy: see mirror_set)."""
NEW_UPSTREAM = "replicas_new"
DARK_UPSTREAM = "dark"
MIRROR_LOCATION = "/.pipeline-mirror"
COOKIE_MAX_AGE = 30 * 24 * 3600
"""Seconds the balancer's user cookie lives (a user keeps one bucket across releases' steps)."""
OTHERS = ""
"""The group name of requests that match no group, in groups.log."""


@dataclass(frozen=True)
class Shaping:
    """What the balancer does besides spreading requests over the routed servers."""

    new: tuple[str, ...] = ()
    """Routed replicas of the new version that users reach only through the split or the groups."""
    percent: int | None = None
    """Sticky split: the share of users (by the balancer's cookie) on the new version."""
    salt: str = ""
    """Mixed into the users' hash: each release draws its own early users."""
    groups: tuple[Group, ...] = ()
    """The groups of users the balancer tells apart (each named in the groups log)."""
    routed: tuple[str, ...] = ()
    """The groups whose requests go to the new version (a phase's)."""
    mirror: tuple[str, ...] = ()
    """The dark set: replicas that get a copy of each request and answer nobody."""
    mirror_methods: tuple[str, ...] = ("GET", "HEAD")

    @property
    def splits(self) -> bool:
        return bool(self.new) and (self.percent is not None or bool(self.routed))


@dataclass(frozen=True)
class ShapingText:
    """The pieces of nginx.conf a Shaping adds (empty strings: nothing)."""

    comment: str = ""
    """Lines at the top of the file (the dark set's names)."""
    http: str = ""
    """Upstreams, maps and log formats inside `http { }`."""
    location: str = ""
    """Lines inside `location / { }` (mirror, cookie)."""
    proxy_pass: str = "http://replicas"
    server: str = ""
    """More locations inside `server { }`."""
    default_upstream: tuple[str, ...] = field(default_factory=tuple)
    """The servers left in `upstream replicas` when the new ones are split off (else all)."""


def _server(name: str, port: int, *, backup: bool = False) -> str:
    tail = " backup" if backup else " max_fails=1 fail_timeout=2s"
    return f"        server {name}:{port}{tail};"


def _header_variable(group: Group) -> str:
    if group.header is not None:
        return "$http_" + group.header.lower().replace("-", "_")
    return f"$cookie_{group.cookie}"


def _group_maps(groups: tuple[Group, ...]) -> list[str]:
    """`$pipeline_group`: the first matching group's name ("" for none), one map per group chained
    through their defaults. nginx matches map strings regardless of case; a leading backslash
    keeps a value such as `default` from being read as a keyword."""
    lines = ["    # User groups: the first group whose header or cookie matches names the request."]
    names = ["$pipeline_group"] + [f"$pipeline_group_{i}" for i in range(2, len(groups) + 1)]
    for index, group in enumerate(groups):
        fallback = names[index + 1] if index + 1 < len(groups) else '""'
        lines.append(f"    map {_header_variable(group)} {names[index]} {{")
        lines.append(f"        default {fallback};")
        lines += [f"        \\{value} {group.name};" for value in group.values]
        lines.append("    }")
    return lines


def render_shaping(shaping: Shaping | None, servers: list[str], port: int, *, log: bool) -> ShapingText:
    """The nginx text for `shaping` with `servers` routed (names, sorted), on the target `port`;
    `log`: the deployment's request logs are on (the mirror's and the groups' too)."""
    if shaping is None:
        return ShapingText(default_upstream=tuple(servers))
    http: list[str] = []
    location: list[str] = []
    server: list[str] = []
    comment = ""
    proxy_pass = "http://replicas"
    new = [s for s in servers if s in shaping.new]
    old = [s for s in servers if s not in shaping.new]
    default = tuple(servers)
    if shaping.splits and new and old:
        default = tuple(old)
        http.append("    # The new version's replicas; the old ones take a request it refuses.")
        http.append(f"    upstream {NEW_UPSTREAM} {{")
        http += [_server(name, port) for name in new] + [_server(name, port, backup=True) for name in old]
        http.append("    }")
        fallback = "replicas"
        if shaping.percent is not None:
            http += [
                f"    # Sticky canary: each user (cookie {USER_COOKIE}) stays on one version; "
                f"{shaping.percent}% of them on the new one.",
                f"    map $cookie_{USER_COOKIE} $pipeline_user {{",
                '        "" $request_id;',
                f"        default $cookie_{USER_COOKIE};",
                "    }",
                f"    map $cookie_{USER_COOKIE} $pipeline_user_cookie {{",
                f'        "" "{USER_COOKIE}=$request_id; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax";',
                '        default "";',
                "    }",
                f'    split_clients "${{pipeline_user}}{shaping.salt}" $pipeline_split {{',
                f"        {shaping.percent}% {NEW_UPSTREAM};",
                "        * replicas;",
                "    }",
            ]
            location.append("            add_header Set-Cookie $pipeline_user_cookie always;")
            fallback = "$pipeline_split"
        if shaping.routed:
            http += _group_maps(shaping.groups)
            http += [
                "    map $pipeline_group $pipeline_upstream {",
                f"        default {fallback};",
                *(f"        \\{name} {NEW_UPSTREAM};" for name in shaping.routed),
                "    }",
            ]
            proxy_pass = "http://$pipeline_upstream"
            if log:
                http += [
                    "    log_format groups '$msec|$pipeline_group|$upstream_addr|$upstream_status|"
                    "$upstream_response_time';",
                    f"    access_log {GROUPS_LOG} groups;",
                ]
        else:
            proxy_pass = "http://$pipeline_split"
    if shaping.mirror:
        comment = MIRROR_COMMENT + ",".join(shaping.mirror)
        http.append("    # Dark launch: the new version gets a copy of each request; its answers are discarded.")
        http.append(f"    upstream {DARK_UPSTREAM} {{")
        http += [_server(name, port) for name in sorted(shaping.mirror)]
        http.append("    }")
        if log:
            http.append("    log_format mirror '$msec|$upstream_addr|$upstream_status|$upstream_response_time';")
        location.append(f"            mirror {MIRROR_LOCATION};")
        methods = "|".join(shaping.mirror_methods)
        server += [
            f"        location = {MIRROR_LOCATION} {{",
            "            internal;",
            "            log_subrequest on;",
            f"            access_log {MIRROR_LOG} mirror;" if log else "            access_log off;",
            f"            if ($request_method !~ ^({methods})$) {{ return 204; }}",
            f"            proxy_pass http://{DARK_UPSTREAM}$request_uri;",
            "            proxy_http_version 1.1;",
            '            proxy_set_header Connection "";',
            "            proxy_set_header Host $http_host;",
            "            proxy_set_header X-Forwarded-For $remote_addr;",
            "            proxy_connect_timeout 2s;",
            "            proxy_read_timeout 10s;",
            "            proxy_next_upstream error timeout http_502 http_503 http_504;",
            "        }",
        ]
    return ShapingText(
        comment=comment,
        http="\n".join(http),
        location="\n".join(location),
        proxy_pass=proxy_pass,
        server="\n".join(server),
        default_upstream=default,
    )


def mirror_set(config: str) -> tuple[str, ...]:
    """The dark set a configuration mirrors to (names); () when it mirrors nothing."""
    for line in config.splitlines():
        if line.startswith(MIRROR_COMMENT):
            return tuple(n for n in line[len(MIRROR_COMMENT) :].split(",") if n)
    return ()


__all__ = [
    "DARK_UPSTREAM",
    "GROUPS_LOG",
    "MIRROR_LOG",
    "OTHERS",
    "Shaping",
    "ShapingText",
    "mirror_set",
    "render_shaping",
]
