"""pop3bridge: POP3 mailboxes to signed webhooks, and a transparent POP3 proxy."""

__version__ = "0.1.0"
