"""labctl: the command-line runner of the microservices lab."""
