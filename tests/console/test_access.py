"""Who may open the console and act in it, through a real API process (SPEC §10): sign-in and its cookie, sign-out,
partner keys and operator accounts never opening each other's doors, CSRF, roles, and every action in the logs."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from tests.conftest import PartnerKey, make_partner
from tests.console.conftest import Console, Operator, csrf_token, make_operator, partner_client, sign_in, waiting_job
from tests.e2e.conftest import wait_for
from tests.hostile import console_endpoints


def _job_status(console: Console, partner: PartnerKey, job_id: str) -> str:
    with partner_client(console, partner) as client:
        status: str = client.get(f"/jobs/{job_id}").json()["status"]
        return status


def test_the_login_form_has_labelled_username_and_password_fields(console: Console) -> None:
    page = httpx.get(console.url + "/console/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for field in ("username", "password"):
        assert f'name="{field}"' in page.text
        assert f'<label for="{field}">' in page.text
    assert 'action="/console/login"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_without_a_session_pages_lead_to_the_login_form_and_everything_else_is_401(
    console: Console, partner: PartnerKey
) -> None:
    with httpx.Client(base_url=console.url) as anonymous:
        page = anonymous.get("/console/jobs?status=failed")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs%3Fstatus%3Dfailed"
        assert anonymous.get("/console/").headers["location"].startswith("/console/login")
        assert anonymous.get("/console").headers["location"] == "/console/"
        job_id = waiting_job(partner)
        for path in ("/console/live/overview", f"/console/jobs/{job_id}/results.ndjson"):
            assert anonymous.get(path).status_code == 401
        assert anonymous.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": "x"}).status_code == 401
    assert _job_status(console, partner, job_id) == "queued"


def test_a_partner_key_does_not_open_the_console(console: Console, partner: PartnerKey) -> None:
    with partner_client(console, partner) as client:
        assert client.get("/jobs").status_code == 200  # the key works where it belongs
        page = client.get("/console/")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login")
        assert client.get("/console/live/overview").status_code == 401
        assert client.get("/console/jobs", follow_redirects=True).url.path == "/console/login"


def test_an_operator_opens_neither_the_partner_api_with_a_session_nor_with_a_password(
    console: Console, admin: Operator
) -> None:
    with sign_in(console, admin) as session:
        assert session.get("/console/").status_code == 200
        for path in ("/jobs", "/businesses", "/webhook"):
            response = session.get(path)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
    assert httpx.get(console.url + "/jobs", auth=(admin.username, admin.password)).status_code == 401


def test_the_session_cookie_is_httponly_samesite_strict_and_secure_over_https(
    console: Console, admin: Operator
) -> None:
    credentials = {"username": admin.username, "password": admin.password}
    plain = httpx.post(console.url + "/console/login", data=credentials)
    assert plain.status_code == 303
    assert plain.headers["location"] == "/console/"
    cookie = plain.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith("pfsync_console=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/console"} <= set(attributes)
    assert "Secure" not in attributes  # plain http: a Secure cookie would never come back

    # Behind a TLS-terminating proxy that uvicorn trusts (here: loopback), the request is https.
    secure = httpx.post(console.url + "/console/login", data=credentials, headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 303
    assert {"HttpOnly", "SameSite=Strict", "Secure"} <= {p.strip() for p in secure.headers["set-cookie"].split(";")}


def test_wrong_credentials_are_refused_without_a_cookie(console: Console, admin: Operator) -> None:
    for credentials in (
        {"username": admin.username, "password": admin.password + "x"},
        {"username": "nobody-" + admin.username, "password": admin.password},
        {"username": "", "password": ""},
    ):
        refused = httpx.post(console.url + "/console/login", data=credentials)
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers
        assert "Wrong username or password" in refused.text


def test_sign_in_goes_back_only_within_the_console_and_only_from_its_own_pages(
    console: Console, viewer: Operator
) -> None:
    credentials = {"username": viewer.username, "password": viewer.password}
    for target, expected in (
        ("/console/jobs?status=failed", "/console/jobs?status=failed"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console/..//evil.example", "/console/"),
        ("/docs", "/console/"),
    ):
        response = httpx.post(console.url + "/console/login", data={**credentials, "next": target})
        assert response.status_code == 303
        assert response.headers["location"] == expected, target
    forged = httpx.post(console.url + "/console/login", data=credentials, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403
    assert "set-cookie" not in forged.headers


def test_too_many_failed_sign_ins_lock_the_username(console: Console) -> None:
    target = make_operator("admin")
    for _ in range(10):  # PFSYNC_CONSOLE_LOGIN_MAX_FAILURES
        assert (
            httpx.post(console.url + "/console/login", data={"username": target.username, "password": "guess"})
        ).status_code == 401
    locked = httpx.post(console.url + "/console/login", data={"username": target.username, "password": target.password})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "set-cookie" not in locked.headers


def test_signing_out_ends_the_session_even_for_a_replayed_cookie(console: Console, viewer: Operator) -> None:
    with sign_in(console, viewer) as session:
        cookie = session.cookies["pfsync_console"]
        overview = session.get("/console/")
        signed_out = session.post("/console/logout", data={"csrf_token": csrf_token(overview.text)})
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/console/login"
        assert "Max-Age=0" in signed_out.headers["set-cookie"]
    with httpx.Client(base_url=console.url, cookies={"pfsync_console": cookie}) as replay:
        assert replay.get("/console/").status_code == 303
        assert replay.get("/console/live/overview").status_code == 401


def test_an_action_without_the_sessions_csrf_token_or_from_another_origin_is_refused(
    console: Console, admin: Operator, partner: PartnerKey
) -> None:
    job_id = waiting_job(partner)
    with sign_in(console, admin) as session:
        token = csrf_token(session.get(f"/console/jobs/{job_id}").text)
        with sign_in(console, make_operator("admin")) as other_session:
            other_token = csrf_token(other_session.get("/console/").text)
        cancel = f"/console/jobs/{job_id}/cancel"
        for form, headers in (
            ({}, {}),  # no token
            ({"csrf_token": ""}, {}),
            ({"csrf_token": token[:-2] + "xx"}, {}),  # forged
            ({"csrf_token": other_token}, {}),  # another session's
            ({"csrf_token": token}, {"Origin": "https://evil.example"}),  # the right token, sent cross-site
            ({"csrf_token": token}, {"Origin": "null"}),
        ):
            refused = session.post(cancel, data=form, headers=headers)
            assert refused.status_code == 403, (form, headers)
            assert refused.headers["content-type"].startswith("text/html")
        # A JSON body is not a console form, whatever it carries.
        as_json = session.post(cancel, content=orjson.dumps({"csrf_token": token}),
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert as_json.status_code == 403
        assert _job_status(console, partner, job_id) == "queued"
        own_origin = session.post(cancel, data={"csrf_token": token}, headers={"Origin": console.url})
        assert own_origin.status_code == 303
    assert _job_status(console, partner, job_id) == "cancelled"


def test_a_viewer_reads_but_may_not_cancel_or_revoke(console: Console, viewer: Operator, partner: PartnerKey) -> None:
    job_id = waiting_job(partner)
    with sign_in(console, viewer) as session:
        page = session.get(f"/console/jobs/{job_id}")
        assert page.status_code == 200
        assert "Only an admin may cancel" in page.text
        token = csrf_token(page.text)
        refused = session.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": token})
        assert refused.status_code == 403
        assert "Only an admin" in refused.text
        refused = session.post(f"/console/keys/{partner.key_id}/revoke", data={"csrf_token": token})
        assert refused.status_code == 403
    assert _job_status(console, partner, job_id) == "queued"
    with partner_client(console, partner) as client:
        assert client.get("/jobs").status_code == 200


def test_an_admin_cancels_a_job_and_revokes_a_key(console: Console, admin: Operator) -> None:
    partner = make_partner("revoked in the console")
    job_id = waiting_job(partner)
    with sign_in(console, admin) as session:
        page = session.get(f"/console/jobs/{job_id}")
        assert 'action="/console/jobs/' + job_id + '/cancel"' in page.text
        cancelled = session.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(page.text)})
        assert cancelled.status_code == 303
        assert cancelled.headers["location"] == f"/console/jobs/{job_id}?notice=cancelled"
        with partner_client(console, partner) as client:
            job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "cancelled"
        assert job["counts"]["cancelled"] == job["counts"]["total"] == 5
        again = session.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(page.text)})
        assert again.status_code == 409

        partner_page = session.get(f"/console/partners/{partner.partner_id}")
        assert f'action="/console/keys/{partner.key_id}/revoke"' in partner_page.text
        revoked = session.post(
            f"/console/keys/{partner.key_id}/revoke", data={"csrf_token": csrf_token(partner_page.text)}
        )
        assert revoked.status_code == 303
        assert revoked.headers["location"] == f"/console/partners/{partner.partner_id}?notice=revoked"

    def refused() -> bool:
        return httpx.get(console.url + "/jobs", auth=partner.auth).status_code == 401

    wait_for(refused, 5, 0.2, "the revoked key to be refused")


def test_every_action_is_logged_with_the_operators_name(console: Console, partner: PartnerKey) -> None:
    operator = make_operator("admin")
    job_id = waiting_job(partner)
    with sign_in(console, operator) as session:
        page = session.get(f"/console/jobs/{job_id}")
        session.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(page.text)})
        session.post("/console/logout", data={"csrf_token": csrf_token(page.text)})
    httpx.post(console.url + "/console/login", data={"username": operator.username, "password": "wrong"})

    def logged() -> list[dict[str, object]]:
        lines = [orjson.loads(line) for line in console.api.log().splitlines() if line.startswith("{")]
        return [line for line in lines if operator.username in (line.get("operator"), line.get("username"))]

    def all_there() -> list[dict[str, object]] | None:
        lines = logged()
        messages = {str(line["message"]) for line in lines}
        wanted = {"operator signed in", "job cancelled by an operator", "operator signed out"}
        return lines if wanted <= messages and any("refused" in m for m in messages) else None

    lines = wait_for(all_there, 10, 0.2, "the console's log lines")
    cancel = next(line for line in lines if line["message"] == "job cancelled by an operator")
    assert cancel["job_id"] == job_id
    assert cancel["partner_id"] == partner.partner_id
    # The access log of a signed-in request names the operator too.
    assert any(line["message"] == "request" and line.get("operator") == operator.username for line in lines)


def test_hostile_requests_to_every_console_route_are_4xx_never_5xx(console: Console, admin: Operator) -> None:
    routes = console_endpoints()
    assert len(routes) >= 15, routes
    ids = {"job_id": "job_x%00y", "partner_id": "ptn_%00", "key_id": "key_" + "x" * 300}
    bodies: list[dict[str, object]] = [
        {},
        {"content": b"\xff\xfe not UTF-8", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"csrf_token=" + b"%00" * 100, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"x" * 20_000, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"{}", "headers": {"Content-Type": "application/json"}},
    ]
    with sign_in(console, admin) as session, httpx.Client(base_url=console.url) as anonymous:
        for client in (anonymous, session):
            for endpoint in routes:
                url = endpoint.url(ids)
                for query in ("", "?status=%00&type=x&partner=%00&after=%00&chunks_after=-5&outcome=%00&next=//x"):
                    for body in bodies if endpoint.method == "POST" else [{}]:
                        response = client.request(endpoint.method, url + query, **body)  # type: ignore[arg-type]
                        assert response.status_code < 500, (endpoint, query, body, response.text[:300])


def test_a_flood_of_sign_ins_costs_partners_neither_connections_nor_time(console: Console, partner: PartnerKey) -> None:
    """Unauthenticated clients posting the form as fast as they can (unknown usernames and a real one, wrong
    passwords) take no connection from the partners' pool: password checks run past the database and only one at
    a time; the others are refused at once with 429. A partner's requests meanwhile all answer, and answer fast."""
    known = make_operator("viewer")
    stop = threading.Event()
    statuses: list[int] = []

    def flood(n: int) -> None:
        with httpx.Client(base_url=console.url, timeout=30) as client:
            while not stop.is_set():
                username = known.username if n % 3 == 0 else f"nobody-{uuid.uuid4().hex[:8]}"
                form = {"username": username, "password": "wrong"}
                statuses.append(client.post("/console/login", data=form, headers={"Origin": console.url}).status_code)

    partner_times: list[float] = []
    with ThreadPoolExecutor(24) as pool, partner_client(console, partner) as client:
        for n in range(24):
            pool.submit(flood, n)
        try:
            time.sleep(0.5)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert client.get("/businesses").status_code == 200
                partner_times.append(time.monotonic() - started)
        finally:
            stop.set()
    assert statuses
    assert all(status in (401, 429) for status in statuses), sorted(set(statuses))
    assert statuses.count(429) > statuses.count(401)  # most are refused before any check
    assert max(partner_times) < 1.0, max(partner_times)


def test_operators_signing_in_at_the_same_moment_all_get_in(console: Console) -> None:
    """Password checks run one at a time, but a few sign-ins wait their turn rather than being refused."""
    operators = [make_operator("viewer") for _ in range(4)]

    def sign_in_now(operator: Operator) -> int:
        with httpx.Client(base_url=console.url, timeout=30) as client:
            form = {"username": operator.username, "password": operator.password}
            return client.post("/console/login", data=form, headers={"Origin": console.url}).status_code

    with ThreadPoolExecutor(len(operators)) as pool:
        assert list(pool.map(sign_in_now, operators)) == [303] * len(operators)
