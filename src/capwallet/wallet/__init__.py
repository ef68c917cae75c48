"""The wallet: the user's half of capwallet.

It keeps the provider API keys and root keys (sealed in the keystore), records the grants the
user made to apps, turns an app's "use AI" into a permission prompt (OAuth 2.0 code flow with
PKCE), shows where the money went, asks the user about expensive calls, and runs the relay on
loopback with the keys from the keystore.
"""
