"""The emulated services. Each mock is a Flask app with its own state; they share nothing but the network."""
