"""What the payloads of a profile the MDM installs do on the device: the work data their accounts bring (mail,
calendar), kept apart as this OS version allows (PROTOCOL.md 5), and taken away with the profile."""
from __future__ import annotations

from lab.device.contents import Contents
from lab.device.separation import CALENDAR, MAIL

# Payload types of InstallProfile that bring work data, and where it goes.
PAYLOAD_DATA = {"com.apple.mail.managed": (MAIL, "Inbox of the work mail account"),
                "com.apple.caldav.account": (CALENDAR, "Work calendar: quarterly review")}


def apply(contents: Contents, identifier: str, types: tuple[str, ...], account: str) -> str:
    done = []
    for kind in types:
        if kind in PAYLOAD_DATA:
            content, text = PAYLOAD_DATA[kind]
            where = contents.put_work_item(content, f"{identifier}/{content}", text, account)
            done.append(f"{content} on the data-separated volume" if where == "sealed" else
                        f"{content} in the shared store (not separated on this OS version)")
    return "; ".join(done)


def remove(contents: Contents, identifier: str, types: tuple[str, ...]) -> str:
    removed = []
    for kind in types:
        if kind in PAYLOAD_DATA:
            content = PAYLOAD_DATA[kind][0]
            item_id = f"{identifier}/{content}"
            if contents.vault is not None:
                contents.vault.remove(content, item_id)
            contents.personal[content] = [i for i in contents.personal.get(content, []) if i["id"] != item_id]
            removed.append(f"its {content} data removed")
    return "; ".join(removed)
