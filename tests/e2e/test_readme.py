"""The README's "Try it" commands, run against a lab as a reader would run them (on this module's ephemeral ports
instead of 8443 and 10053), print what the README shows; and what it says about the scenarios stays true."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from lab.scenario import available
from tests.conftest import ROOT, require_tool

README = (ROOT / "README.md").read_text()
TRY_IT = README[README.index("## Try it"):README.index("\n## ", README.index("## Try it") + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def normalised(text: str, lab) -> str:
    """What differs from run to run (ports, times, ids) made equal."""
    text = text.replace(f":{lab.https_port}", ":8443")
    text = re.sub(r"\bin \d+ ms\b", "in N ms", text)
    text = re.sub(r"\b[0-9A-F]{32}\b", "<enrollment id>", text)
    return re.sub(r"\bLAB[0-9A-F]{8}\b", "<device id>", text)


def test_try_it_enroll_prints_what_the_readme_shows(lab):
    console = blocks(TRY_IT, "console")[0]
    command, *shown = console.rstrip("\n").split("\n")
    assert command.startswith("$ mdmlab ")
    args = command[len("$ mdmlab "):].split()
    result = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MDMLAB_STATE_DIR": str(lab.state_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert normalised(result.stdout, lab).splitlines() == normalised("\n".join(shown), lab).splitlines()


def test_try_it_dig_and_curl_lines_work_and_the_last_shows_the_challenge(lab):
    require_tool("dig")
    require_tool("curl")
    script = blocks(TRY_IT, "sh")[0].replace("\\\n", " ")
    commands = [line.strip() for line in script.splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["dig", "curl", "curl"]
    outputs = []
    for command in commands:
        command = (command.replace("-p 10053", f"-p {lab.dns.port}").replace(":8443", f":{lab.https_port}")
                   .replace(".mdmlab/pki/ca.pem", str(lab.pki.cert_path)))
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, command + "\n" + done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "status: NOERROR" in outputs[0] and "127.0.0.1" in outputs[0]
    assert '"Servers"' in outputs[1]
    assert outputs[2].startswith("HTTP/1.1 401")
    assert re.search(r"^WWW-Authenticate: Bearer method=\"apple-as-web\"", outputs[2], re.M), outputs[2]


def test_what_the_readme_says_about_scenarios_and_commands_is_true():
    for count in re.findall(r"\b(\d+) scenarios\b", README):
        assert int(count) == len(available()), f"the README says {count} scenarios; there are {len(available())}"
    assert "activate" in TRY_IT and "dig" in TRY_IT and "curl" in TRY_IT
    from lab.cli import main

    for name in re.findall(r"^\| `mdmlab ([a-z-]+)", README, re.M):
        assert name in main.commands, f"the README's CLI table names `mdmlab {name}`, which does not exist"
    for name in main.commands:
        assert f"| `mdmlab {name}" in README, f"`mdmlab {name}` is missing from the README's CLI table"
