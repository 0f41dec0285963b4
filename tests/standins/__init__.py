"""Stand-in backends (Speaches, Ollama) used by the test suite."""
