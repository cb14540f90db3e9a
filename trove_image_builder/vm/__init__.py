"""Guests on this host: qemu boots with a config drive as Nova makes it,
and a RabbitMQ of our own to talk to the guest agent as Trove does."""
