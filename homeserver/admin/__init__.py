"""The operator's tools: the admin service (users, rooms, tokens, media, reports) and
the `homeserver admin ...` command line."""
