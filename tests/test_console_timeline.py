"""Enrollments out of the event timeline (lab/console/timeline.py), on hand-made events."""
from __future__ import annotations

import itertools

import pytest

from lab.console import timeline

ELIZA = "eliza@betterbag.test"
ENROLLMENT_ID = "4E7120A8A0B348E5B172499A5133B846"
WELL_KNOWN = "/.well-known/com.apple.remotemanagement"


class Events:
    """A timeline under construction: ids and timestamps advance by themselves."""

    def __init__(self, start: float = 1000.0):
        self.items: list[dict] = []
        self.ids = itertools.count(1)
        self.ts = start

    def add(self, component, kind="http", *, host=None, method=None, path=None, status=None, stage=None,
            device=None, summary="", detail=None, gap=0.01, enrollment=None, user=None, message_type=None,
            outcome=None) -> dict:
        self.ts += gap
        event = {"id": next(self.ids), "ts": self.ts, "component": component, "kind": kind, "host": host,
                 "method": method, "path": path, "status": status, "stage": stage, "device": device,
                 "summary": summary, "detail": detail or {}, "enrollment": enrollment, "user": user,
                 "message_type": message_type, "outcome": outcome}
        self.items.append(event)
        return event

    def dns(self, name, rcode=0, **kw):
        return self.add("dns", "dns", host=name, method="A", status=rcode, summary=f"A {name}", **kw)

    def http(self, component, host, method, path, status, stage=None, device=None, summary="", query="", **kw):
        return self.add(component, host=host, method=method, path=path, status=status, stage=stage, device=device,
                        summary=summary or f"{status}", detail={"query": query}, **kw)

    def step(self, stage, action, verdict="ok", device=ELIZA, explanation="", code=None, **kw):
        return self.add("device", "device", stage=stage, device=device, summary=f"{verdict}: {action}",
                        detail={"verdict": verdict, "code": code, "explanation": explanation,
                                "device": "iPhone 26.1 LAB0001"}, **kw)

    def outcome(self, outcome="enrolled", diagnosis=None, device=ELIZA, **kw):
        return self.add("device", "device-outcome", stage="check-in", device=device, outcome=outcome,
                        summary=f"{outcome}: the end", detail={"outcome": outcome, "diagnosis": diagnosis,
                                                               "device": "iPhone 26.1 LAB0001"}, **kw)


def enrollment_exchanges(ev: Events, device_steps: bool = True) -> None:
    """One successful account-driven enrollment as the servers and then the device record it."""
    ev.dns("betterbag.test")
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA,
            query="user-identifier=eliza@betterbag.test&model-family=iPhone")
    ev.dns("mdm.lab.test")
    ev.http("mdm", "mdm.lab.test", "POST", "/enroll", 401, "authentication")
    ev.http("mdm", "mdm.lab.test", "GET", "/auth/web", 200, "authentication", ELIZA)
    ev.http("mdm", "mdm.lab.test", "POST", "/auth/web", 308, "authentication", ELIZA)
    ev.http("mdm", "mdm.lab.test", "POST", "/enroll", 200, "enrollment", ELIZA)
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in", ENROLLMENT_ID, summary="Authenticate x",
            enrollment=ENROLLMENT_ID, message_type="Authenticate")
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in", ENROLLMENT_ID, summary="TokenUpdate x",
            enrollment=ENROLLMENT_ID, message_type="TokenUpdate", outcome="enrolled")
    if device_steps:
        ev.step("identifier", f"sign in to work or school account as {ELIZA}")
        ev.step("discovery", "GET https://betterbag.test/.well-known/com.apple.remotemanagement?user-identifier="
                             "eliza@betterbag.test&model-family=iPhone → 200")
        ev.step("authentication", "POST https://mdm.lab.test:8443/enroll → 401")
        ev.step("authentication", "parse the challenge")
        ev.step("authentication",
                "GET https://mdm.lab.test:8443/auth/web?user-identifier=eliza%40betterbag.test → 200")
        ev.step("authentication", "POST https://mdm.lab.test:8443/auth/web → 308")
        ev.step("enrollment", "POST https://mdm.lab.test:8443/enroll → 200")
        ev.step("enrollment", "verify the profile signature")
        ev.step("check-in", "PUT https://mdm.lab.test:8443/mdm/checkin Authenticate → 200")
        ev.step("check-in", "PUT https://mdm.lab.test:8443/mdm/checkin TokenUpdate → 200")
        ev.outcome()


def test_one_enrollment_is_one_attempt_with_every_exchange_and_step():
    ev = Events()
    ev.add("lab", "lab", summary="lab up")
    enrollment_exchanges(ev)
    [attempt] = timeline.enrollments(ev.items, {ENROLLMENT_ID: ELIZA}, now=ev.ts + 100)
    assert attempt["identifier"] == ELIZA and attempt["status"] == "enrolled" and attempt["path"] == "direct"
    assert attempt["enrollment_ids"] == [ENROLLMENT_ID]
    assert attempt["device"] == "iPhone 26.1 LAB0001"
    assert attempt["lanes"] == ["device", "dns", "org-domain", "mdm"]
    # every event but the lab's belongs to it, the device's request steps folded into the exchanges they made
    assert attempt["first_event"] == 2 and attempt["last_event"] == ev.items[-1]["id"]
    labels = [s["label"] for s in attempt["steps"]]
    assert labels[0] == f"ok: sign in to work or school account as {ELIZA}"
    assert labels[1:3] == ["A betterbag.test", "GET betterbag.test/.well-known/com.apple.remotemanagement?"
                           "user-identifier=eliza@betterbag.test&model-family=iPhone"]
    assert labels.index("ok: parse the challenge") == labels.index("POST mdm.lab.test/enroll") + 1
    assert labels.index("ok: verify the profile signature") > labels.index("POST mdm.lab.test/enroll", 6)
    assert attempt["steps"][-1]["kind"] == "device-outcome"
    merged = [s for s in attempt["steps"] if s.get("device_event")]
    assert len(merged) == 7  # every request the device made found the server's record of it
    assert [s["tone"] for s in attempt["steps"] if s["kind"] == "http"] == \
        ["good", "challenge", "good", "redirect", "good", "good", "good"]


def test_an_enrollment_id_joins_the_attempt_in_progress_without_the_mdm_state():
    ev = Events()
    enrollment_exchanges(ev)
    [attempt] = timeline.enrollments(ev.items, {}, now=ev.ts + 100)  # e.g. after a reset: the MDM forgot it
    assert attempt["enrollment_ids"] == [ENROLLMENT_ID] and attempt["status"] == "enrolled"
    assert len([s for s in attempt["steps"] if s.get("device_event")]) == 7
    # later polls of that enrollment stay with it, even after a pause
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/connect", 200, "commands", ENROLLMENT_ID, gap=timeline.PAUSE * 3)
    [attempt] = timeline.enrollments(ev.items, {}, now=ev.ts + 100)
    assert attempt["steps"][-1]["label"] == "PUT mdm.lab.test/mdm/connect"


def test_an_unknown_enrollment_id_with_nothing_in_progress_is_its_own_story():
    ev = Events()
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/connect", 200, "commands", ENROLLMENT_ID)
    [attempt] = timeline.enrollments(ev.items, {}, now=ev.ts + 100)
    assert attempt["identifier"] == ENROLLMENT_ID


def test_a_device_verdict_colours_the_exchange_it_judged():
    ev = Events()
    ev.dns("betterbag.test")
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA)
    ev.step("discovery", "GET https://betterbag.test/.well-known/com.apple.remotemanagement → 200", "fail",
            explanation="served as text/html", code="wrong-content-type")
    ev.outcome("failed", "wrong-content-type")
    [attempt] = timeline.enrollments(ev.items, now=ev.ts + 100)
    assert attempt["status"] == "failed" and attempt["diagnosis"] == "wrong-content-type"
    [http] = [s for s in attempt["steps"] if s["kind"] == "http"]
    assert http["tone"] == "bad" and http["verdict"] == "fail" and http["explanation"] == "served as text/html"
    assert http["code"] == "wrong-content-type"


def test_abm_fallback_stays_one_attempt_and_is_marked_abm():
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 404, "discovery", ELIZA)
    ev.dns("axm-adm-enroll.lab.test")
    ev.http("abm", "axm-adm-enroll.lab.test", "GET", WELL_KNOWN, 302, "discovery", ELIZA)
    ev.http("mdm", "mdm.lab.test", "GET", "/mdm/service-discovery", 200, "discovery", ELIZA)
    ev.http("mdm", "mdm.lab.test", "POST", "/enroll", 401, "authentication")
    [attempt] = timeline.enrollments(ev.items, now=ev.ts + 1)
    assert attempt["path"] == "abm" and attempt["status"] == "in-progress"
    assert attempt["lanes"] == ["device", "dns", "org-domain", "abm", "mdm"]
    assert len(attempt["steps"]) == 5


def test_a_new_discovery_after_getting_further_is_a_new_attempt():
    ev = Events()
    enrollment_exchanges(ev, device_steps=False)
    enrollment_exchanges(ev, device_steps=False)
    attempts = timeline.enrollments(ev.items, {ENROLLMENT_ID: ELIZA}, now=ev.ts + 100)
    assert len(attempts) == 2
    newest, oldest = attempts
    assert newest["first_event"] > oldest["last_event"]
    # each attempt took its own DNS answers, the anonymous 401 included
    for attempt in attempts:
        assert [s["kind"] for s in attempt["steps"]].count("dns") == 2
        assert any(s["tone"] == "challenge" for s in attempt["steps"])


def test_the_same_request_twice_starts_a_new_attempt():
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 404, "discovery", ELIZA)
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA)
    assert len(timeline.group(ev.items)) == 2


def test_a_pause_starts_a_new_attempt_and_old_dns_is_not_pulled_in():
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", "/redirected", 404, "discovery", ELIZA)
    ev.dns("betterbag.test", gap=timeline.PAUSE + 1)
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA, gap=timeline.LOOKBACK + 1)
    first, second = timeline.group(ev.items)
    assert [e["kind"] for e in second.events] == ["http"]  # the DNS answer came too long before it


def test_two_users_are_kept_apart_by_their_labels():
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA)
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", "bob@betterbag.test")
    ev.http("mdm", "mdm.lab.test", "GET", "/auth/web", 200, "authentication", ELIZA)
    attempts = {a.identifier: a for a in timeline.group(ev.items)}
    assert [e["id"] for e in attempts[ELIZA].events] == [1, 3]
    assert [e["id"] for e in attempts["bob@betterbag.test"].events] == [2]


@pytest.mark.parametrize("component,stage", [("console", None), ("abm", "abm-api"), ("abm", "abm-admin"),
                                             ("lab", None)])
def test_the_control_plane_and_server_to_server_calls_are_no_device_story(component, stage):
    ev = Events()
    ev.add(component, "http", host="x", method="GET", path="/", status=200, stage=stage, device=ELIZA)
    assert timeline.group(ev.items) == []


def test_a_lab_event_ends_every_attempt():
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 404, "discovery", ELIZA)
    ev.add("lab", "lab", summary="lab reset to scenario betterbag")
    ev.http("mdm", "mdm.lab.test", "GET", "/auth/web", 200, "authentication", ELIZA)
    assert len(timeline.group(ev.items)) == 2


@pytest.mark.parametrize("events,idle,status", [
    ([("mdm", 200, "enrolled")], 0, "enrolled"),  # the server saw it, before the device said anything
    ([("mdm", 200, None)], timeline.SETTLE + 1, "incomplete"),  # "TokenUpdate" in the summary is only words
    ([("org-domain", 404, None)], 1, "in-progress"),
    ([("org-domain", 404, None)], timeline.SETTLE + 1, "failed"),
    ([("org-domain", 200, None)], timeline.SETTLE + 1, "incomplete"),
    ([("mdm", 401, None)], timeline.SETTLE + 1, "incomplete"),  # a challenge is no error
])
def test_status_without_a_reported_outcome(events, idle, status):
    ev = Events()
    for component, code, outcome in events:
        ev.http(component, "h.test", "PUT", "/mdm/checkin" if component == "mdm" else WELL_KNOWN, code,
                "check-in" if component == "mdm" else "discovery", ELIZA, summary="TokenUpdate x", outcome=outcome)
    [attempt] = timeline.enrollments(ev.items, now=ev.ts + idle)
    assert attempt["status"] == status


def test_dns_errors_and_unanswered_queries_are_errors():
    ev = Events()
    assert timeline.is_error(ev.dns("x.test", 3))  # NXDOMAIN
    assert timeline.is_error(ev.dns("x.test", None))  # dropped (dns-timeout)
    assert not timeline.is_error(ev.dns("x.test", 0))
    assert timeline.step(ev.items[0])["result"] == "NXDOMAIN"
    assert timeline.step(ev.items[1])["result"] == "no answer"


class FakeLog:
    def __init__(self, n: int, every: int = 1):
        self.events = [{"id": i, "component": "dns" if i % every == 0 else "mdm"} for i in range(1, n + 1)]

    def last_id(self):
        return len(self.events)

    def query(self, *, after=0, limit=500, newest=False, component=None, **_):
        found = [e for e in self.events if e["id"] > after and (component is None or e["component"] == component)]
        return found[-limit:] if newest else found[:limit]


@pytest.mark.parametrize("n,count,every", [(0, 5, 1), (3, 5, 1), (10, 5, 1), (20000, 50, 1), (20000, 7, 997),
                                           (12000, 0, 1)])
def test_newest_finds_the_last_matching_events_oldest_first(n, count, every):
    log = FakeLog(n, every)
    filters = {"component": "dns"} if every > 1 else {}
    expected = [e for e in log.events if not filters or e["component"] == "dns"][-count:] if count else []
    assert timeline.newest(log, count, **filters) == expected


def test_an_answer_the_device_refused_is_red_even_when_the_server_said_200():
    """Issue 11 §4: the POST /enroll → 200 that delivered a refused profile was green "ok"."""
    ev = Events()
    ev.http("mdm", "mdm.lab.test", "POST", "/enroll", 200, "enrollment", ELIZA)
    ev.step("enrollment", "POST https://mdm.lab.test:8443/enroll → 200")
    ev.step("enrollment", "verify the profile signature")
    ev.step("enrollment", "check the enrollment profile", "fail", explanation="AssignedManagedAppleID is missing",
            code="profile-missing-maa")
    ev.outcome("failed", "profile-missing-maa")
    [attempt] = timeline.enrollments(ev.items, now=ev.ts + 100)
    [enroll] = [s for s in attempt["steps"] if s["kind"] == "http"]
    assert enroll["tone"] == "bad" and enroll["refused"] and enroll["result"] == "200 · refused"
    assert enroll["explanation"] == "AssignedManagedAppleID is missing"
    assert enroll["device_event"] == ev.items[3]["id"]  # its detail shows the refusal, not the ok of the POST


def test_check_in_arrows_name_their_message_type():
    ev = Events()
    enrollment_exchanges(ev)
    [attempt] = timeline.enrollments(ev.items, now=ev.ts + 100)
    labels = [s["label"] for s in attempt["steps"] if s["stage"] == "check-in" and s["kind"] == "http"]
    assert labels == ["PUT mdm.lab.test/mdm/checkin Authenticate", "PUT mdm.lab.test/mdm/checkin TokenUpdate"]


def test_the_fields_say_whose_enrollment_id_it_is_without_the_mdm_state_or_a_guess():
    """Contract 2: an MDM event labelled with user and enrollment joins that user's attempt, even with no attempt
    in progress to guess from (here another user's exchange came in between)."""
    ev = Events()
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA)
    ev.http("mdm", "mdm.lab.test", "POST", "/enroll", 200, "enrollment", ELIZA, user=ELIZA)
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", "omar@betterbag.test")
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in", ENROLLMENT_ID, user=ELIZA,
            enrollment=ENROLLMENT_ID, message_type="TokenUpdate", outcome="enrolled")
    ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/server", 200, "commands", ENROLLMENT_ID, enrollment=ENROLLMENT_ID)
    attempts = {a["identifier"]: a for a in timeline.enrollments(ev.items, {}, now=ev.ts + 100)}
    assert set(attempts) == {ELIZA, "omar@betterbag.test"}
    assert attempts[ELIZA]["status"] == "enrolled" and attempts[ELIZA]["enrollment_ids"] == [ENROLLMENT_ID]
    assert len(attempts[ELIZA]["steps"]) == 4


def test_a_later_poll_of_an_enrollment_stays_with_the_attempt_that_made_it_not_the_users_newest():
    """Walkthrough finding: a second device of the same user failed; the first device's command polls (same user,
    its own EnrollmentID) were credited to the failed attempt, which grew to 18 steps and 47 s."""
    ev = Events()
    enrollment_exchanges(ev)
    ev.step("identifier", f"sign in to work or school account as {ELIZA}")  # another device of Eliza's
    ev.http("org-domain", "betterbag.test", "GET", WELL_KNOWN, 200, "discovery", ELIZA)
    ev.step("authentication", "POST https://mdm.lab.test:8443/enroll", verdict="fail", code="tls-broken")
    ev.outcome("failed", diagnosis="tls-broken")
    for _ in range(3):
        ev.http("mdm", "mdm.lab.test", "PUT", "/mdm/server", 200, "commands", ENROLLMENT_ID, user=ELIZA,
                enrollment=ENROLLMENT_ID, gap=timeline.PAUSE * 2)
    first, second = timeline.enrollments(ev.items, {}, now=ev.ts + 100)[::-1]  # newest first
    assert first["status"] == "enrolled" and second["status"] == "failed"
    assert [s["label"] for s in first["steps"]][-3:] == ["PUT mdm.lab.test/mdm/server"] * 3
    assert not any(s["label"] == "PUT mdm.lab.test/mdm/server" for s in second["steps"])
    assert second["enrollment_ids"] == []
