"""WhatsApp Business compliance archive."""

__version__ = "0.1.0"
