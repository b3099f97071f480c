"""lab.faults: faults as records (spec + place + hook), the board that hands them out, and what it says about them."""
from __future__ import annotations

import pytest
from dnslib import DNSRecord

import mocks
from lab.dns import DNS_FAULTS, Zone, ZoneResolver
from lab.events import EventLog
from lab.faults import TLS_FAULTS, FaultBoard, FaultRegistry, TLSFaults, catalogue
from lab.launcher import fault_catalogue
from lab.pki import CertificateAuthority
from mocks.org_domain import faults as org_domain_faults

HOST = "betterbag.test"


def board_of(*specs, concealed=False, events=None) -> FaultBoard:
    return FaultBoard(catalogue(list(specs)), {"demo": {HOST}, "dns": {HOST}, "tls": {HOST}}, HOST, events,
                      concealed=concealed)


def demo_registry() -> FaultRegistry:
    fault = FaultRegistry("demo")

    @fault("early", at="first", description="d", symptom="s")
    def _(answer):
        return answer + " broken early"

    @fault("late", at="second", description="d", symptom="s")
    def _(answer):
        return answer + " broken late"

    return fault


def test_a_registered_fault_is_one_record_with_its_place_and_hook():
    fault = demo_registry()
    early, late = fault.specs
    assert (early.name, early.component, early.at) == ("early", "demo", "first")
    assert early.apply("answer") == "answer broken early"
    assert fault.places() == {"first": ("early",), "second": ("late",)}


def test_a_name_registered_twice_is_refused():
    fault = demo_registry()
    with pytest.raises(ValueError, match="twice"):
        fault("early", description="d", symptom="s")(lambda a: a)


def test_take_hands_out_only_the_faults_of_its_place_and_the_caller_applies_it():
    board = board_of(*demo_registry().specs)
    board.set("late", times=1)
    assert board.take("demo", HOST, at="first") is None  # armed for another place: not consumed
    armed = board.take("demo", HOST, at="second")
    assert armed.name == "late" and armed.apply("answer") == "answer broken late"
    assert board.take("demo", HOST, at="second") is None  # its one use is spent


def test_peek_shows_without_consuming():
    board = board_of(*demo_registry().specs)
    board.set("early", times=1)
    assert board.peek("demo", HOST, at="first").name == "early"
    assert board.peek("demo", HOST, at="first").remaining == 1
    assert board.take("demo", HOST, at="first").name == "early"
    assert board.peek("demo", HOST) is None


@pytest.mark.parametrize("concealed", [False, True])
def test_every_word_about_a_fault_comes_from_the_board_and_exercise_mode_names_none(concealed):
    board = board_of(*demo_registry().specs, concealed=concealed)
    armed = board.set("early")
    said = [board.say("the service is unavailable", armed), board.label(armed)]
    assert ("early" in " ".join(said)) is not concealed
    assert board.say("the service is unavailable", None) == "the service is unavailable"
    assert board.name(armed) == (None if concealed else "early")
    assert (board.armed() == []) is concealed


def test_the_catalogue_is_joined_once_from_every_component():
    joined = fault_catalogue()
    assert list(joined) == [s.name for s in [*mocks.FAULTS, *DNS_FAULTS, *TLS_FAULTS]]
    assert {s.component for s in mocks.FAULTS} == {"org-domain", "abm", "apple-id", "mdm", "idp"}
    assert all(s.apply is not None for s in [*DNS_FAULTS, *TLS_FAULTS, *org_domain_faults.FAULTS])
    assert {s.at for s in org_domain_faults.FAULTS} == {org_domain_faults.AT}


def test_a_dns_fault_is_applied_through_the_board_and_its_timeline_words_follow_the_mode(tmp_path):
    zone = Zone([HOST])
    zone.add(HOST, "A", "127.0.0.1")
    for concealed in (False, True):
        events = EventLog(tmp_path / f"events-{concealed}.db")
        board = board_of(*DNS_FAULTS, concealed=concealed)
        resolver = ZoneResolver(zone, events, board)
        board.set("dns-timeout", times=1)
        assert resolver.resolve(DNSRecord.question(HOST, "A"), None) is None
        assert resolver.resolve(DNSRecord.question(HOST, "A"), None).rr
        summaries = [e["summary"] for e in events.query(kind="dns")]
        assert summaries[0] == "A betterbag.test → no answer" + ("" if concealed else " (fault dns-timeout)")
        events.close()


def test_a_tls_fault_issues_its_certificate_once_per_host(tmp_path):
    pki = CertificateAuthority(tmp_path / "pki", [HOST])
    board = board_of(*TLS_FAULTS)
    built = []
    override = TLSFaults(board, pki, lambda cert, key: built.append(cert) or f"context:{cert.name}")
    assert override(HOST) is None
    board.set("tls-expired", times=2)
    assert override(HOST) == override(HOST) == f"context:{HOST}.expired.pem"
    assert len(built) == 1 and override(HOST) is None
