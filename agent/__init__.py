"""Private voice assistant for a home server: WebRTC, Pipecat, Ollama and Speaches."""
