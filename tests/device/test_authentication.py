"""What real devices accept that Apple does not document: a 303 callback and a challenge whose parameters are
separated by spaces. The lab's device accepts both with a warning; in strict mode it refuses them."""
from __future__ import annotations

import pytest

from lab.device import DeviceFailure, Trace
from lab.device.authentication import Callback, judge_callback_status, parse_challenge
from lab.device.trace import WARN


class _Response:
    status_code = 303
    headers: dict = {}
    content = b""


def _callback() -> Callback:
    return Callback("apple-remotemanagement-user-login://authentication-results?access-token=x", _Response(),
                    "POST https://mdm.lab.test/auth/web → 303", {"method": "POST"}, 0.01)


def test_a_303_callback_is_accepted_with_a_warning():
    trace = Trace()
    judge_callback_status(_callback(), trace, strict=False)
    assert [(s.verdict, s.code) for s in trace.steps] == [(WARN, "callback-not-308")]


def test_strict_mode_refuses_a_303_callback():
    with pytest.raises(DeviceFailure) as refused:
        judge_callback_status(_callback(), Trace(), strict=True)
    assert refused.value.code == "callback-not-308"


def test_space_separated_challenge_parameters_are_accepted_with_a_warning_and_refused_when_strict():
    header = 'Bearer method="apple-as-web" url="https://mdm.lab.test/auth"'
    challenge = parse_challenge(header)
    assert challenge.params["url"] == "https://mdm.lab.test/auth" and challenge.separator_warning
    with pytest.raises(ValueError):
        parse_challenge(header, strict=True)
