"""Names Apple's protocol fixes, shared by the mocks, the device and the lab's observers (PROTOCOL.md)."""

WELL_KNOWN_PATH = "/.well-known/com.apple.remotemanagement"  # stage 1, on the org domain and Apple's fallback
CALLBACK_SCHEME = "apple-remotemanagement-user-login"  # stage 2, where sign-in hands the result to the device
# stage 1: the model-family values of the well-known request (and ABM's device types), in ABM's order
MODEL_FAMILIES = ("iPhone", "iPad", "Mac", "AppleTV", "RealityDevice", "Watch")
