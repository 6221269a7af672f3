"""Outgoing webhooks (Standard Webhooks): endpoints admins register (`endpoints`), where they may point
(`destinations`), and the dispatcher that signs and POSTs the outbox's events to them (`dispatch`)."""
