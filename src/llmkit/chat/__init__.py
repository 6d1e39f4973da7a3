"""Chat: templates, conversations that fit the context window."""
