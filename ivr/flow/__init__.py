"""Call flows: one sequential `async def` per flow, over the `ivr.channel.Channel` interface."""
