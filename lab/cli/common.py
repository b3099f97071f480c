"""What every command group shares: one-line failures, the --state-dir and --json options, the running lab's
lab.json, the console's control client, and the Network a simulated device uses to reach the lab."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import NoReturn

import click

from lab import config
from lab.device.model import FAMILIES


def _existing_dir(ctx, param, value: str | None) -> str | None:
    if value is not None and not Path(value).is_dir():
        raise click.BadParameter(f"{value} is not a directory: give the state dir of a lab ('mdmlab up --state-dir "
                                 "DIR' made it)", ctx=ctx, param=param)
    return value


state_dir_option = click.option("--state-dir", default=None, callback=_existing_dir,
                                help="State directory of the running lab [default: $MDMLAB_STATE_DIR or ./.mdmlab].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
model_family_option = click.option("--model-family", type=click.Choice(list(FAMILIES)), default="iPhone",
                                   show_default=True)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def nearest(word: str, names, what: str) -> str:
    """``no WHAT named WORD`` and the nearest names, for a typo."""
    close = difflib.get_close_matches(word, list(names), n=3, cutoff=0.6)
    return f"no {what} named {word!r}" + (f"; did you mean {' or '.join(close)}?" if close else "")


def load_scenario(name: str):
    """The scenario NAME (or TOML path), or a one-line failure that suggests the nearest names."""
    from lab.scenario import ScenarioError, available, load

    if not name.endswith(".toml") and not Path(name).exists() and name not in available():
        fail(nearest(name, available(), "scenario") + " ('mdmlab scenario list' shows them all)")
    try:
        return load(name)
    except ScenarioError as exc:
        fail(str(exc))


def lab_info(state_dir: str | None) -> dict:
    """The running lab's lab.json, or a one-line failure that says how to start one."""
    try:
        return config.read_lab_file(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        fail(str(exc))


def control(state_dir: str | None):
    """A client of the running lab's control API (its console); close it after use."""
    from lab.cli.control import ControlClient

    try:
        return ControlClient(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        fail(str(exc))


def request(client, method: str, path: str, **kwargs):
    """One request through an open control client; its JSON answer, or a one-line failure."""
    from lab.cli.control import ControlError

    try:
        return client.request(method, path, **kwargs)
    except ControlError as exc:
        fail(str(exc))


def call(state_dir: str | None, method: str, path: str, **kwargs):
    """One request to the running lab's control API; its JSON answer, or a one-line failure."""
    client = control(state_dir)
    try:
        return request(client, method, path, **kwargs)
    finally:
        client.close()


def network(info: dict):
    """How a simulated device reaches the lab that ``info`` (lab.json) describes."""
    from lab.net import Network

    return Network.from_lab_info(info)


def host_port(text: str, option: str, default_port: int = 53) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` → (host, port), or a usage error naming ``option``."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", str(default_port))
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise click.BadParameter(f"{text!r} is not HOST or HOST:PORT", param_hint=option)
    return host, int(port)
