"""Reference relay for capwallet tokens, with the fake model provider its tests run against."""
