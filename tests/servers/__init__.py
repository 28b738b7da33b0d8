"""Real HTTP servers for tests: a scripted fault server and a tiny OpenAI-compatible server."""
