"""Names Apple's protocol fixes, shared by the mocks, the device and the lab's observers (PROTOCOL.md)."""
import re

WELL_KNOWN_PATH = "/.well-known/com.apple.remotemanagement"  # stage 1, on the org domain and Apple's fallback
CALLBACK_SCHEME = "apple-remotemanagement-user-login"  # stage 2, where sign-in hands the result to the device
# stage 1: the model-family values of the well-known request (and ABM's device types), in ABM's order
MODEL_FAMILIES = ("iPhone", "iPad", "Mac", "AppleTV", "RealityDevice", "Watch")
# the stages of the flow, in order, each with the step of PROTOCOL.md it belongs to (1 discovery, 2 authentication,
# 3 enrollment, 4 the enrolled life); the device's trace, the scenarios, the fleet and the timeline share them
STAGES = {"identifier": 1, "discovery": 1, "authentication": 2, "enrollment": 3, "check-in": 3,
          "ongoing-authentication": 4, "commands": 4, "unenrollment": 4}
ENROLLMENT_STAGES = tuple(stage for stage, step in STAGES.items() if step <= 3)  # where an enrollment can stop
ENROLLMENT_MODES = {"mdm-byod": "BYOD", "mdm-adde": "ADDE"}  # discovery's Version → the profile's EnrollmentMode


def discovery_server(identifier: str | None, model_family: str | None, *, version: str, versions: dict,
                     base_url: str, adde_base_url: str | None = None) -> dict:
    """The one ``Servers`` entry of a well-known answer (PROTOCOL.md 1.2, 1.4): the Version set for this user,
    else for this model family, else the default; ADDE goes to ``adde_base_url`` when the server has one."""
    chosen = versions.get(identifier or "") or versions.get(model_family or "") or version
    url = adde_base_url if chosen == "mdm-adde" and adde_base_url else base_url
    return {"Version": chosen, "BaseURL": url}


# An app's bundle identifier, as a scenario or the CLI names the apps a person installed before enrolling.
BUNDLE_ID = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")

# after the profile: ABM/ASM's "Allow Managed Apple Account on" values, and the GetToken service type Apple's
# identity service asks the MDM for when the setting restricts sign-in
MAA_ALLOWED_ON = ("any", "managed", "supervised")
MAID_TOKEN_SERVICE = "com.apple.maid"
MAA_SIGN_IN_PATH = "/v1/managed-account/sign-in"  # (lab) Apple's identity service is private
# (lab) where the web view of a federated Managed Apple Account sign-in ends: Apple's result code for the device
MAA_FEDERATED_SCHEME = "mdmlab-maa"
