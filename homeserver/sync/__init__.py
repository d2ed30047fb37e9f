"""Real time: the notifier, sync tokens, filters, typing, presence and the /sync builder."""
