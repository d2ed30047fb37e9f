"""End-to-end encryption support: the key server, to-device messages, device lists."""
