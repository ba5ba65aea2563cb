"""platformctl: provision learners on a small self-hosted coding platform."""

__version__ = "0.1.0"
