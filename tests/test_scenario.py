"""lab.scenario: TOML scenarios. Every error is a ScenarioError naming the file and the offending key."""
from __future__ import annotations

import textwrap

import pytest

from lab import scenario
from lab.scenario import ScenarioError, load

VALID = """
[scenario]
name = "mini"
description = "a small scenario"

[organization]
name = "Mini Org"
kind = "school"

[lab]
zone = "mini.test"

[[domains]]
name = "mini-school.test"
version = "mdm-adde"
txt = ["apple-domain-verification=abc"]

[[users]]
identifier = "ada@mini-school.test"
password = "pw-123456"
full_name = "Ada"

[mdm]
host = "mdm.mini.test"
auth = "simple"
token_ttl = 60
topic = "com.apple.mgmt.External.mini"
"""


def write(tmp_path, text: str, name: str = "case.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path) -> str:
    with pytest.raises(ScenarioError) as failure:
        load(str(path))
    message = str(failure.value)
    assert str(path) in message, message
    return message


def test_default_scenario_loads():
    sc = load()
    assert sc.name == "betterbag"
    assert sc.organization == "BetterBag"
    assert sc.kind == "business"
    assert sc.zone == "lab.test"
    assert [(d.name, d.version) for d in sc.domains] == [("betterbag.test", "mdm-byod")]
    assert [u.identifier for u in sc.users] == ["eliza@betterbag.test"]
    assert sc.user("eliza@betterbag.test").password == "carry-on-2026"
    assert sc.user("nobody@betterbag.test") is None
    assert sc.mdm.host == "mdm.lab.test"
    assert sc.mdm.auth == "simple"
    assert sc.mdm.token_ttl == 3600
    assert sc.mdm.topic.startswith("com.apple.mgmt.")
    assert sc.console_host == "console.lab.test"
    assert {"betterbag.test", "lab.test", "localhost"} <= set(sc.suffixes)
    assert sc.path == scenario.SCENARIO_DIR / "betterbag.toml"


def test_default_scenario_is_listed():
    assert "betterbag" in scenario.available()


def test_a_file_path_loads_with_every_key(tmp_path):
    sc = load(str(write(tmp_path, VALID)))
    assert sc.name == "mini" and sc.kind == "school" and sc.zone == "mini.test"
    assert sc.domains[0].version == "mdm-adde"
    assert sc.domains[0].txt == ("apple-domain-verification=abc",)
    assert sc.users[0].full_name == "Ada"
    assert (sc.mdm.host, sc.mdm.token_ttl, sc.mdm.topic) == ("mdm.mini.test", 60, "com.apple.mgmt.External.mini")
    assert sc.suffixes == ["localhost", "mini-school.test", "mini.test"]


def test_defaults_fill_missing_optional_keys(tmp_path):
    sc = load(str(write(tmp_path, """
        [organization]
        name = "Org"
        [[domains]]
        name = "org.test"
        """, name="minimal.toml")))
    assert sc.name == "minimal"  # the file stem
    assert sc.zone == "lab.test"
    assert sc.domains[0].version == "mdm-byod"
    assert sc.users == ()
    assert sc.mdm.host == "mdm.lab.test"
    assert sc.mdm.token_ttl == 3600


@pytest.mark.parametrize("text, key, where", [
    ("surprise = 1\n" + VALID, "surprise", "top level"),
    (VALID.replace('[mdm]\n', '[mdm]\ntoken_lifetime = 5\n'), "token_lifetime", "[mdm]"),
    (VALID.replace('full_name = "Ada"', 'full_name = "Ada"\nrole = "admin"'), "role", "[users[0]]"),
    (VALID.replace('version = "mdm-adde"', 'version = "mdm-adde"\nverified = true'), "verified", "[domains[0]]"),
    (VALID.replace('zone = "mini.test"', 'zone = "mini.test"\nport = 53'), "port", "[lab]"),
    (VALID.replace('kind = "school"', 'kind = "school"\nsize = 3'), "size", "[organization]"),
    (VALID.replace('description = "a small scenario"', 'descripton = "typo"'), "descripton", "[scenario]"),
    (VALID + "\n[mdm.extra]\nx = 1\n", "extra", "[mdm]"),
])
def test_unknown_keys_name_the_key_the_table_and_the_file(tmp_path, text, key, where):
    message = load_error(write(tmp_path, text))
    assert f"'{key}'" in message
    assert where in message


@pytest.mark.parametrize("old, new, where", [
    ('token_ttl = 60', 'token_ttl = "60"', "mdm.token_ttl"),
    ('token_ttl = 60', 'token_ttl = true', "mdm.token_ttl"),
    ('token_ttl = 60', 'token_ttl = 1.5', "mdm.token_ttl"),
    ('token_ttl = 60', 'token_ttl = 0', "mdm.token_ttl"),
    ('token_ttl = 60', 'token_ttl = -5', "mdm.token_ttl"),
    ('auth = "simple"', 'auth = "saml"', "mdm.auth"),
    ('topic = "com.apple.mgmt.External.mini"', 'topic = 7', "mdm.topic"),
    ('host = "mdm.mini.test"', 'host = "mdm.elsewhere.example"', "'mdm.elsewhere.example' is outside"),
    ('host = "mdm.mini.test"', 'host = "not a host"', "mdm.host"),
    ('kind = "school"', 'kind = "government"', "organization.kind"),
    ('name = "Mini Org"', 'name = 42', "organization.name"),
    ('zone = "mini.test"', 'zone = 3', "lab.zone"),
    ('zone = "mini.test"', 'zone = "-bad-.test"', "lab.zone"),
    ('version = "mdm-adde"', 'version = 2', "domains[0].version"),
    ('version = "mdm-adde"', 'version = "mdm-adde"\naddress = "no"', "domains[0].address"),
    ('txt = ["apple-domain-verification=abc"]', 'txt = "apple-domain-verification=abc"', "domains[0].txt"),
    ('txt = ["apple-domain-verification=abc"]', 'txt = [1]', "domains[0].txt"),
    ('name = "mini-school.test"', 'name = "under_score.test"', "domains[0].name"),
    ('identifier = "ada@mini-school.test"', 'identifier = 5', "users[0].identifier"),
    ('identifier = "ada@mini-school.test"', 'identifier = "ada"', "users[0].identifier"),
    ('identifier = "ada@mini-school.test"', 'identifier = "a@b@mini-school.test"', "users[0].identifier"),
    ('identifier = "ada@mini-school.test"', 'identifier = "@mini-school.test"', "users[0].identifier"),
    ('password = "pw-123456"', 'password = 123456', "users[0].password"),
    ('full_name = "Ada"', 'full_name = ["Ada"]', "users[0].full_name"),
    ('name = "mini"', 'name = 1', "scenario.name"),
])
def test_bad_values_name_the_key_and_the_file(tmp_path, old, new, where):
    """``where`` is the key as the message spells it (for a host outside the zones: the host)."""
    assert VALID.count(old) == 1
    message = load_error(write(tmp_path, VALID.replace(old, new)))
    assert where in message


BASE = '[organization]\nname = "Org"\n[[domains]]\nname = "org.test"\n'


@pytest.mark.parametrize("text, fragment", [
    (BASE + '[[mdm]]\nhost = "mdm.lab.test"\n', "[mdm] must be a table"),
    ('mdm = 5\n' + BASE, "[mdm] must be a table"),
    (BASE + '[users]\nidentifier = "a@b.test"\n', "[[users]] must be an array of tables"),
    ('domains = "x.test"\n[organization]\nname = "Org"\n', "[[domains]] must be an array of tables"),
    ('users = [1]\n' + BASE, "[users[0]] must be a table"),
])
def test_wrong_table_shapes(tmp_path, text, fragment):
    assert fragment in load_error(write(tmp_path, text))


@pytest.mark.parametrize("text, fragment", [
    ('[[domains]]\nname = "org.test"\n', "[organization] needs a name"),
    ('[organization]\nname = "Org"\n', "at least one [[domains]]"),
    ('[organization]\nname = "Org"\n[[domains]]\nversion = "mdm-byod"\n', "domains[0] needs a name"),
    ('[organization]\nname = "Org"\n[[domains]]\nname = "org.test"\n[[users]]\nidentifier = "a@org.test"\n',
     "users[0] needs password"),
])
def test_missing_required_keys(tmp_path, text, fragment):
    assert fragment in load_error(write(tmp_path, text))


@pytest.mark.parametrize("text", ['[organization\nname = "x"\n', 'name = \n', 'a = 1\na = 2\n'])
def test_invalid_toml(tmp_path, text):
    message = load_error(write(tmp_path, text))
    assert "not valid TOML" in message


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[organization]\nname = "Caf\xe9"\n'.encode("latin-1"))
    assert "not valid TOML" in load_error(path)


def test_missing_scenario_name_lists_available_ones():
    with pytest.raises(ScenarioError) as failure:
        load("no-such-scenario")
    message = str(failure.value)
    assert "'no-such-scenario' not found" in message
    assert "available:" in message and "betterbag" in message.split("available:")[1]


def test_missing_scenario_path_names_the_path(tmp_path):
    path = tmp_path / "nope.toml"
    message = load_error(path)
    assert "not found" in message and "betterbag" in message


def test_scenario_error_is_a_value_error():
    assert issubclass(ScenarioError, ValueError)


def test_the_device_can_bring_apps_installed_before_enrolling_and_another_mdm(tmp_path):
    loaded = load(write(tmp_path, BASE + '[device]\npersonal_apps = ["com.example.chat"]\nmanaged_by = "Old MDM"\n'))
    assert (loaded.device.personal_apps, loaded.device.managed_by) == (("com.example.chat",), "Old MDM")
    assert load(write(tmp_path, BASE)).device.personal_apps is None  # the device's own default
    assert "device.personal_apps" in load_error(write(tmp_path, BASE + '[device]\npersonal_apps = ["chat"]\n'))
@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ('"enroll"', "enroll")])
def test_abm_register_url_is_a_choice_including_the_wrong_url(tmp_path, value, expected):
    assert load(write(tmp_path, BASE + f"[abm]\nregister_url = {value}\n")).abm.register_url == expected


def test_a_register_url_that_is_no_choice_is_refused(tmp_path):
    assert "abm.register_url" in load_error(write(tmp_path, BASE + '[abm]\nregister_url = "discovery"\n'))


def test_mdm_hosts_route_a_model_family_and_refuse_an_unknown_one(tmp_path):
    routed = load(write(tmp_path, BASE + 'mdm_hosts = { Mac = "mdm-mac.org.test" }\n'))
    assert routed.domains[0].mdm_hosts == (("Mac", "mdm-mac.org.test"),)
    assert "domains[0].mdm_hosts" in load_error(write(tmp_path, BASE + 'mdm_hosts = { Toaster = "x.org.test" }\n'))
