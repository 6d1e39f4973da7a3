"""The HTTP server: OpenAI- and Ollama-compatible APIs and a web chat page over batched generation."""
