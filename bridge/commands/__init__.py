"""One module per `pop3bridge` subcommand; see `bridge.cli`."""
